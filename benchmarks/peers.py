"""resdeploy against its peers, in one run on this machine, for the demo model and ResNet-50.

Per model, at batch 1 and 8 on the CPU, each runtime timed alone in its own process:
  torch eager FP32 | ONNX Runtime FP32 | OpenVINO's default CPU inference (optional peer,
  `pip install openvino`) | ONNX Runtime `quantize_static` with its defaults (the peer INT8) |
  resdeploy FP16 | resdeploy INT8 (cpu profile) | resdeploy INT8 (tensorrt profile, run by ORT).
Prints latency, speed-up over torch and accuracy on Fashion-MNIST test as one table and writes
JSON. ResNet-50 has random weights (seed 0; no ImageNet weights offline): its accuracy column
is agreement with FP32 on 500 test images at 224 px, which says nothing about real accuracy.

    python benchmarks/peers.py [--out runs/bench-peers] [--models fashion,resnet50] [--iters 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from resdeploy import _onnx
from resdeploy.data import calibration_batches, load_dataset
from resdeploy.export import export_onnx
from resdeploy.models import load_model
from resdeploy.preprocess import Preprocess
from resdeploy.quantize import QuantizeConfig, quantize
from resdeploy.runtime import Artifact, BenchConfig, EvalConfig, benchmark_isolated, environment, evaluate

MODELS = {"fashion": "zoo:fashion-resnet18", "resnet50": "resnet50"}
# ORT's default MinMax calibrator keeps every activation of every batch in memory: ResNet-50
# at 224 px needs fewer images than the demo model to fit in 24 GiB.
PEER_CALIB = {"fashion": 512, "resnet50": 128}


def ort_default_int8(fp32: Path, out: Path, n: int) -> None:
    """The peer: onnxruntime.quantization.quantize_static with its defaults."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    pre = Preprocess.from_metadata(_onnx.metadata(_onnx.load(fp32)))
    assert pre is not None
    batches = calibration_batches(load_dataset("fashion-mnist:train"), pre, input_name="input", size=n, batch_size=16)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader())


def openvino_worker(onnx: str, batches: str, iters: int, limit: int) -> None:
    """Child process: OpenVINO's default CPU compile of the FP32 ONNX; latency and predictions."""
    import openvino as ov

    compiled = ov.Core().compile_model(onnx, "CPU")
    result: dict = {"latency": {}}
    pre = Preprocess.from_metadata(_onnx.metadata(_onnx.load(onnx)))
    assert pre is not None
    for b in (int(x) for x in batches.split(",")):
        x = np.random.default_rng(0).standard_normal((b, *pre.input_shape)).astype(np.float32)
        req = compiled.create_infer_request()
        for _ in range(10):
            req.infer({0: x})
        samples = []
        for _ in range(iters):
            t = time.perf_counter()
            req.infer({0: x})
            samples.append((time.perf_counter() - t) * 1e3)
        result["latency"][str(b)] = float(np.median(samples))
    test = load_dataset("fashion-mnist:test")
    req = compiled.create_infer_request()
    preds = [np.asarray(req.infer({0: x})[compiled.outputs[0]]).argmax(1)
             for x, _ in test.batches(pre, 250, np.arange(min(limit, len(test))))]
    result["pred"] = np.concatenate(preds).tolist()
    print(json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-peers")
    ap.add_argument("--models", default="fashion,resnet50")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--openvino-worker", nargs=4, metavar=("ONNX", "BATCHES", "ITERS", "LIMIT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.openvino_worker:
        onnx, batches, iters, limit = args.openvino_worker
        openvino_worker(onnx, batches, int(iters), int(limit))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bcfg = BenchConfig(batches=(1, 8), iters=args.iters, warmup=10, max_seconds=30.0)
    rows: list[dict] = []
    for key in args.models.split(","):
        spec = MODELS[key]
        limit = 10_000 if key == "fashion" else 500
        fp32 = out / f"{key}-fp32.onnx"
        export_onnx(load_model(spec), fp32)
        variants: dict[str, tuple[str, Path | None, float]] = {
            "torch eager fp32": ("torch", None, 0.0), "onnxruntime fp32": ("ort-cpu", fp32, 0.0)}
        peer = out / f"{key}-ort-default-int8.onnx"
        t0 = time.perf_counter()
        ort_default_int8(fp32, peer, PEER_CALIB[key])
        variants["onnxruntime quantize_static defaults"] = ("ort-cpu", peer, time.perf_counter() - t0)
        for name, cfg in (("resdeploy fp16", QuantizeConfig(precision="fp16")),
                          ("resdeploy int8 cpu", QuantizeConfig(precision="int8", target="cpu", calib="fashion-mnist:train")),
                          ("resdeploy int8 tensorrt", QuantizeConfig(precision="int8", target="tensorrt", calib="fashion-mnist:train"))):
            path = out / f"{key}-{name.split(' ', 1)[1].replace(' ', '-')}.onnx"
            t0 = time.perf_counter()
            quantize(fp32, path, cfg)
            variants[name] = ("ort-cpu", path, time.perf_counter() - t0)
        onnx_paths = [str(p) for _, p, _ in variants.values() if p is not None]
        acc = evaluate([Artifact.resolve(p) for p in onnx_paths], "fashion-mnist:test", config=EvalConfig(limit=limit))
        by_path = {r.artifact: r for r in acc.results}
        ref_pred_top1 = by_path[str(fp32)].top1
        for name, (backend, path, qsec) in variants.items():
            lat = {r.batch: r.latency_ms["p50"] for r in benchmark_isolated(str(path) if path else spec, backend, bcfg)}
            r = by_path.get(str(path)) if path else None
            rows.append({"model": spec, "runtime": name, "p50_b1": lat[1], "p50_b8": lat[8],
                         "top1": r.top1 if r else acc.reference["top1"], "agreement": r.agreement_top1 if r else 1.0,
                         "n": limit, "quantize_s": round(qsec, 1)})
        ov = subprocess.run([sys.executable, __file__, "--openvino-worker", str(fp32), "1,8", str(args.iters), str(limit)],
                            capture_output=True, text=True)
        if ov.returncode == 0:
            data = json.loads(ov.stdout.strip().splitlines()[-1])
            pred = np.asarray(data["pred"])
            labels = load_dataset("fashion-mnist:test").labels[:limit]
            rows.append({"model": spec, "runtime": "openvino default (cpu)", "p50_b1": data["latency"]["1"],
                         "p50_b8": data["latency"]["8"], "top1": float(np.mean(pred == labels)), "agreement": None,
                         "n": limit, "quantize_s": 0.0, "fp32_onnx_top1": ref_pred_top1})
        else:
            rows.append({"model": spec, "runtime": "openvino default (cpu)",
                         "skipped": (ov.stderr.strip().splitlines() or ["failed"])[-1]})
    env = environment(None, "one process per runtime")
    print(f"\n{env['cpu']}, {env['cores']} cores; each runtime timed alone in its own process; p50 latency")
    print(f"{'model':22} {'runtime':38} {'b1 ms':>8} {'b8 ms':>8} {'x torch':>8} {'top-1 %':>8} {'agree %':>8}")
    torch_b1 = {r["model"]: r["p50_b1"] for r in rows if r["runtime"] == "torch eager fp32"}
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:22} {r['runtime']:38} skipped: {r['skipped']}")
            continue
        top1 = f"{100 * r['top1']:.2f}" if r["model"].startswith("zoo:") else "n/a"
        agree = f"{100 * r['agreement']:.2f}" if r.get("agreement") is not None else "-"
        print(f"{r['model']:22} {r['runtime']:38} {r['p50_b1']:8.2f} {r['p50_b8']:8.2f} "
              f"{torch_b1[r['model']] / r['p50_b1']:8.1f} {top1:>8} {agree:>8}")
    (out / "results.json").write_text(json.dumps({"rows": rows, "env": env}, indent=2))
    print(f"\nwrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
