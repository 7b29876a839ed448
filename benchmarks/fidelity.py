"""INT8 fidelity side by side: resdeploy against NVIDIA ModelOpt, NNCF and ONNX Runtime.

For each model (the demo zoo:fashion-resnet18 and zoo:fashion-resnet50, both trained by the
project on Fashion-MNIST at 32 px; zoo:fashion-resnet18-gray, a 1-channel ResNet-18 on native
1 x 28 x 28 Fashion-MNIST; and ``hard-resnet50``: a ResNet-50 trained briefly with SGD on
Fashion-MNIST at 32 px by a seeded recipe of this script (HARD_RECIPE; cached under
$RESDEPLOY_CACHE/zoo, under a minute of training on 2 cores), undertrained on purpose: the kind of model on
which calibration methods part ways), the same FP32 export, the same 512 class-balanced
calibration images and all 10,000 test images: INT8 by resdeploy (tensorrt and cpu profiles,
``auto`` and each calibration method), by ModelOpt's ONNX PTQ (max, entropy, and max with an FP32 remainder),
by NNCF (performance and mixed presets) and by ONNX Runtime's quantize_static (its defaults, and
per-channel with percentile calibration). Every INT8 ONNX is run by ONNX Runtime on the CPU (the
standard Q/DQ semantics, the same runtime for all); printed per model: top-1 with its 95% Wilson
interval, the drop against FP32 with its exact McNemar p-value, top-1 agreement with FP32, the
quantize time, and where each tool puts its activation Q/DQ (the op types fed by a dequantized
activation). An extra resdeploy row quantizes the MaxPool and GlobalAveragePool inputs too, as
ModelOpt does, to decide that placement with numbers.

The peers run in their own venv (``make peers-venv``); without it only resdeploy's rows are made.

    python benchmarks/fidelity.py [--models fashion-resnet18,fashion-resnet50,fashion-resnet18-gray,hard-resnet50]
                                  [--out runs/fidelity]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from resdeploy import _onnx
from resdeploy.data import calibration_batches, load_dataset
from resdeploy.device import environment
from resdeploy.export import export_onnx
from resdeploy.models import LoadedModel, load_model
from resdeploy.quantize import QuantizeConfig, _calib, _qdq, quantize
from resdeploy.stats import paired_drop, wilson_interval
from resdeploy.zoo import FASHION_PREPROCESS, ZOO

ROOT = Path(__file__).resolve().parents[1]
# The hard model: torchvision resnet50(num_classes=10, zero_init_residual=True), plain SGD (momentum
# 0.9, no weight decay; LR warmed up linearly over `warmup` steps, then constant) for `steps` batches
# of the first steps * batch Fashion-MNIST train images, FP32, seed 0, one torch thread (the same
# floats on any machine, and faster than two on a shared 2-core one); then the batch-norm running
# statistics are re-estimated (cumulative average, no gradients) over the next `bn_images` train
# images, so the eval-mode model is the trained one and not one with lagging statistics.
# Version 1 (LR 0.02 for 96 steps, default init, no re-estimation) came out at 16.6 % top-1.
HARD_RECIPE = {"arch": "resnet50", "seed": 0, "steps": 40, "batch": 64, "lr": 0.1, "warmup": 5, "momentum": 0.9,
               "zero_init_residual": True, "bn_images": 512, "version": 2}
PEERS = [("modelopt", "max"), ("modelopt", "entropy"), ("modelopt", "max-fp32"), ("nncf", "performance"),
         ("nncf", "mixed"), ("ort", "defaults"), ("ort", "best")]
CALIB_SIZE = 512


def hard_model() -> LoadedModel:
    """The undertrained ResNet-50 (HARD_RECIPE), trained on first use and cached with its recipe."""
    import torch
    import torchvision

    from resdeploy import _io
    from resdeploy.models import ModelSpec

    path = _io.cache_dir() / "zoo" / "fidelity-hard-resnet50.pth"
    info = path.with_suffix(".json")
    model = torchvision.models.resnet50(num_classes=10)
    if not (path.is_file() and info.is_file() and json.loads(info.read_text()).get("recipe") == HARD_RECIPE):
        r = HARD_RECIPE
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(r["seed"])
            model = torchvision.models.resnet50(num_classes=10, zero_init_residual=r["zero_init_residual"])
            train = load_dataset("fashion-mnist:train")
            n = r["steps"] * r["batch"]
            x = torch.from_numpy(train.take(np.arange(n), FASHION_PREPROCESS))
            y = torch.from_numpy(train.labels[:n].astype(np.int64))
            opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"])
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(r["seed"]))
            model.train()
            t0 = time.perf_counter()
            for step in range(r["steps"]):
                for group in opt.param_groups:
                    group["lr"] = r["lr"] * min(1.0, (step + 1) / r["warmup"])
                idx = perm[step * r["batch"]:(step + 1) * r["batch"]]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.reset_running_stats()
                    mod.momentum = None  # cumulative average over the re-estimation batches
            xb = torch.from_numpy(train.take(np.arange(n, n + r["bn_images"]), FASHION_PREPROCESS))
            with torch.no_grad():
                for i in range(0, len(xb), r["batch"]):
                    model(xb[i:i + r["batch"]])
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.momentum = 0.1
        finally:
            torch.set_num_threads(threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        info.write_text(json.dumps({"recipe": r, "seconds": round(time.perf_counter() - t0, 1),
                                    "final_loss": float(loss.detach())}))
        print(f"trained the hard model in {time.perf_counter() - t0:.0f} s -> {path}", file=sys.stderr)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return LoadedModel(model.eval(), FASHION_PREPROCESS, 10, ModelSpec("resnet50", num_classes=10),
                       "resnet50 trained briefly with SGD on Fashion-MNIST (benchmarks/fidelity.py HARD_RECIPE)")


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    sess = _onnx.session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)])


def qdq_placement(path: Path) -> str:
    """Op types fed by a dequantized activation (weights excluded), with counts."""
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def weight_path(name: str) -> bool:
        node = producers.get(name)
        return name in inits or (node is not None and all(weight_path(i) for i in node.input if i))

    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" and not weight_path(n.input[0])
              for o in n.output}
    counts = Counter(n.op_type for n in model.graph.node if any(i in dq_out for i in n.input))
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _resdeploy_pool_qdq(fp32: Path, out: Path, calib: list[dict[str, np.ndarray]], name: str) -> None:
    """resdeploy's tensorrt profile plus Q/DQ on the MaxPool and GlobalAveragePool inputs."""
    model = _onnx.load(fp32)
    _qdq.name_nodes(model)
    units = _qdq.find_units(model)
    pools = [_qdq.Unit(n.name, "pool", n.input[0]) for n in model.graph.node
             if n.op_type in ("MaxPool", "GlobalAveragePool")]
    tensors = sorted({u.tensor for u in [*units, *pools]})
    thresholds = _calib.calibrate(model, tensors, calib, "mse")
    out.write_bytes(_onnx.serialize(_qdq.write_qdq(model, [*units, *pools], thresholds)))


def _peer(tool: str, setting: str, fp32: Path, calib_npz: Path, out: Path, python: Path) -> dict:
    proc = subprocess.run([str(python), str(ROOT / "benchmarks" / "_peer_quantize.py"), tool, setting, str(fp32),
                           str(calib_npz), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _variants(key: str, fp32: Path, out: Path, calib: list[dict[str, np.ndarray]], calib_npz: Path,
              peers_python: Path | None) -> list[dict]:
    rows = []
    for target in ("tensorrt", "cpu"):
        for method in ("auto", *_calib.METHODS):
            path = out / f"{key}-resdeploy-{target}-{method}.onnx"
            t0 = time.perf_counter()
            rep = quantize(fp32, path, QuantizeConfig(precision="int8", target=target, calib="fashion-mnist:train",
                                                      calib_size=CALIB_SIZE, calib_method=method))
            chose = f" (chose {rep.calib['chosen']})" if method == "auto" else ""
            rows.append({"tool": "resdeploy", "setting": f"{target} {method}{chose}", "path": path,
                         "seconds": time.perf_counter() - t0})
    path = out / f"{key}-resdeploy-tensorrt-pool-qdq.onnx"
    t0 = time.perf_counter()
    _resdeploy_pool_qdq(fp32, path, calib, key)
    rows.append({"tool": "resdeploy", "setting": "tensorrt mse + MaxPool/GAP Q/DQ", "path": path,
                 "seconds": time.perf_counter() - t0})
    for tool, setting in PEERS if peers_python else []:
        path = out / f"{key}-{tool}-{setting}.onnx"
        res = _peer(tool, setting, fp32, calib_npz, path, peers_python)
        rows.append({"tool": tool, "setting": setting, "path": path if "error" not in res else None,
                     "seconds": res.get("seconds"), "version": res.get("version"), "error": res.get("error")})
    return rows


def run_model(key: str, out: Path, peers_python: Path | None) -> list[dict]:
    fp32 = out / f"{key}-fp32.onnx"
    export_onnx(hard_model() if key == "hard-resnet50" else load_model(f"zoo:{key}"), fp32)
    # 3 x 32 x 32 (the hard model is trained on the demo's preprocessing), or 1 x 28 x 28 for the grey model
    pre = ZOO["fashion-resnet18" if key == "hard-resnet50" else key].preprocess
    calib = calibration_batches(load_dataset("fashion-mnist:train"), pre, input_name="input",
                                size=CALIB_SIZE, batch_size=32)
    calib_npz = out / f"{key}-calib.npz"
    np.savez(calib_npz, x=np.concatenate([b["input"] for b in calib]))
    test = load_dataset("fashion-mnist:test")
    x = test.take(np.arange(len(test)), pre)
    ref = _logits(fp32, x)
    ref_correct = ref.argmax(1) == test.labels
    rows = []
    for v in _variants(key, fp32, out, calib, calib_npz, peers_python):
        row = {"model": key, "tool": v["tool"], "setting": v["setting"], "quantize_s": v["seconds"],
               "version": v.get("version"), "fp32_top1": float(ref_correct.mean())}
        if v["path"] is None:
            rows.append({**row, "error": v.get("error")})
            continue
        got = _logits(v["path"], x)
        correct = got.argmax(1) == test.labels
        drop = paired_drop(ref_correct, correct)
        rows.append({**row, "top1": float(correct.mean()), "top1_ci95": wilson_interval(int(correct.sum()), len(x)),
                     "drop_pp": drop.drop_pp, "drop_p_value": drop.p_value,
                     "agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
                     "max_abs_logit_err": float(np.abs(got - ref).max()), "qdq_inputs_of": qdq_placement(v["path"])})
    return rows


def _print(rows: list[dict]) -> None:
    print(f"\n{'model':17} {'tool':10} {'setting':38} {'top-1 % (95% CI)':>22} {'drop pp (p)':>16} {'agree %':>8} "
          f"{'quant s':>8}  activation Q/DQ feeds")
    for r in rows:
        if "error" in r and r.get("top1") is None:
            print(f"{r['model']:17} {r['tool']:10} {r['setting']:38} failed: {r['error']}")
            continue
        lo, hi = r["top1_ci95"]
        print(f"{r['model']:17} {r['tool']:10} {r['setting']:38} {100 * r['top1']:7.2f} ({100 * lo:.2f}-{100 * hi:.2f})"
              f" {r['drop_pp']:+7.2f} ({r['drop_p_value']:.2g}) {100 * r['agreement']:8.2f} {r['quantize_s']:8.1f}  "
              f"{r['qdq_inputs_of']}")
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and r.get("top1") is not None]
        for target in ("tensorrt", "cpu"):
            mine = [r for r in ok if r["tool"] == "resdeploy" and r["setting"].startswith(f"{target} ")
                    and "Q/DQ" not in r["setting"]]
            auto = next((r for r in mine if " auto" in r["setting"]), None)
            single = [r for r in mine if " auto" not in r["setting"]]
            if auto and single:
                best1 = max(single, key=lambda r: r["agreement"])
                print(f"{model}: {target} auto agreement {100 * auto['agreement']:.2f} % vs best single method "
                      f"({best1['setting']}) {100 * best1['agreement']:.2f} %: {100 * (auto['agreement'] - best1['agreement']):+.2f} points")
        ours = max((r for r in ok if r["tool"] == "resdeploy" and r["setting"].startswith("tensorrt")),
                   key=lambda r: r["agreement"])
        peers = [r for r in ok if r["tool"] != "resdeploy"]
        if peers:
            best = max(peers, key=lambda r: r["agreement"])
            print(f"{model}: best resdeploy tensorrt profile ({ours['setting']}) agreement {100 * ours['agreement']:.2f} % "
                  f"vs best peer ({best['tool']} {best['setting']}) {100 * best['agreement']:.2f} %: "
                  f"ratio {ours['agreement'] / best['agreement']:.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="fashion-resnet18,fashion-resnet50,fashion-resnet18-gray,hard-resnet50")
    ap.add_argument("--out", default="runs/fidelity")
    ap.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peers_python = Path(args.peers_python) if Path(args.peers_python).is_file() else None
    if peers_python is None:
        print(f"no peers venv at {args.peers_python} (make peers-venv): resdeploy rows only", file=sys.stderr)
    start = time.perf_counter()
    rows = [r for key in args.models.split(",") for r in run_model(key, out, peers_python)]
    _print(rows)
    env = environment(None, "one process")
    print(f"\n{env['cpu']}, {env['cores']} cores; {time.perf_counter() - start:.0f} s")
    (out / "fidelity.json").write_text(json.dumps({"rows": rows, "env": env}, indent=2, default=str))
    print(f"wrote {out / 'fidelity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
