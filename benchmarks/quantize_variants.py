"""FP32 vs FP16 vs INT8 (TensorRT profile) vs INT8 (CPU profile), in one run on this machine.

For the demo model (zoo:fashion-resnet18) and ResNet-50 (random weights, seed 0: no ImageNet
weights offline, so its "accuracy" is agreement with FP32 on Fashion-MNIST images at 224 px),
prints top-1, agreement with FP32 and batch-1 latency in ONNX Runtime on the CPU, each
artifact timed alone in its own process, and the latency ratio to FP32.

    python benchmarks/quantize_variants.py [--out runs/bench-quantize] [--models fashion,resnet50]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from resdeploy.export import export_onnx
from resdeploy.models import load_model
from resdeploy.quantize import QuantizeConfig, quantize
from resdeploy.runtime import Artifact, BenchConfig, benchmark_isolated, environment, evaluate

MODELS = {"fashion": "zoo:fashion-resnet18", "resnet50": "resnet50"}
VARIANTS = [
    ("fp32", None),
    ("fp16", QuantizeConfig(precision="fp16")),
    ("int8-tensorrt", QuantizeConfig(precision="int8", target="tensorrt", calib="fashion-mnist:train")),
    ("int8-cpu", QuantizeConfig(precision="int8", target="cpu", calib="fashion-mnist:train")),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-quantize")
    ap.add_argument("--models", default="fashion,resnet50")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=None, help="validation images (default: all 10,000)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in args.models.split(","):
        spec = MODELS[key]
        fp32 = out / f"{key}-fp32.onnx"
        export_onnx(load_model(spec), fp32)
        paths = {}
        for name, cfg in VARIANTS:
            path = fp32 if cfg is None else out / f"{key}-{name}.onnx"
            t0 = time.perf_counter()
            if cfg is not None:
                quantize(fp32, path, cfg)
            paths[name] = (path, time.perf_counter() - t0)
        limit = args.eval_limit if key == "fashion" else (args.eval_limit or 500)
        report = evaluate([Artifact.resolve(str(p)) for p, _ in paths.values()], "fashion-mnist:test",
                          reference=Artifact.resolve(str(fp32)), config=_eval_config(limit))
        cfg = BenchConfig(batches=(1,), iters=args.iters, max_seconds=30.0)
        base_ms = None
        for (name, (path, qsec)), acc in zip(paths.items(), report.results, strict=True):
            lat = benchmark_isolated(str(path), "ort-cpu", cfg)[0].latency_ms["p50"]
            base_ms = base_ms or lat
            rows.append({"model": spec, "variant": name, "top1": acc.top1 if key == "fashion" else None,
                         "agreement_top1": acc.agreement_top1, "n": acc.n, "p50_ms": lat,
                         "ratio_to_fp32": lat / base_ms, "quantize_s": qsec})
    env = environment(None, "one process per artifact")
    print(f"\n{env['cpu']}, {env['cores']} cores, onnxruntime {env['versions'].get('onnxruntime')}, batch 1, CPU")
    print(f"{'model':22} {'variant':14} {'top-1 %':>8} {'agree %':>8} {'p50 ms':>8} {'x fp32':>7} {'quant s':>8}")
    for r in rows:
        top1 = f"{100 * r['top1']:.2f}" if r["top1"] is not None else "n/a"
        print(f"{r['model']:22} {r['variant']:14} {top1:>8} {100 * r['agreement_top1']:8.2f} "
              f"{r['p50_ms']:8.2f} {r['ratio_to_fp32']:7.2f} {r['quantize_s']:8.1f}")
    (out / "results.json").write_text(json.dumps({"rows": rows, "env": env}, indent=2))
    print(f"\nwrote {out / 'results.json'}")
    return 0


def _eval_config(limit: int | None):
    from resdeploy.runtime import EvalConfig

    return EvalConfig(limit=limit)


if __name__ == "__main__":
    raise SystemExit(main())
