"""CPU speed side by side: resdeploy against its peers, in one run on this machine, for the demo
model and ResNet-50, at batch 1 and 8, each runtime timed alone in its own process.

Rows: torch eager FP32 | ONNX Runtime FP32 | OpenVINO's own defaults on the FP32 ONNX | ONNX
Runtime `quantize_static` with its defaults | NNCF INT8 (`nncf.quantize` on the ONNX, in the
peers' venv) run by OpenVINO, with OpenVINO's defaults and with resdeploy's `ov-cpu` settings, the
faster kept | resdeploy FP16 | resdeploy INT8 cpu profile and tensorrt profile, on `ort-cpu` and on
`ov-cpu`. The two INT8 rows that matter (resdeploy's cpu profile on its best CPU backend against
NNCF + OpenVINO) are timed in alternated rounds and compared by the median of their p50s. Accuracy:
top-1 on Fashion-MNIST test for the demo model (all 10,000 images); for ResNet-50 (random weights,
seed 0, no ImageNet weights offline) only agreement with FP32 on 500 images, which says nothing
about real accuracy.

Quantize speed (``--quantize-speed``, or ``--only-quantize-speed`` for this part alone): `resdeploy
quantize` of ResNet-50 at 224 px (seeded random weights) with its defaults (``auto`` calibration and
the per-layer report included) on 128 preprocessed Fashion-MNIST train images in an .npz, for each
target, against ``nncf.quantize`` on the same ONNX and the same images (peers' venv), each in a
process of its own, alternated over ``--quantize-rounds`` rounds; printed: each tool's median wall
time (the whole resdeploy CLI process, imports and data loading included, against NNCF's
``nncf.quantize`` call alone, and against NNCF's whole process), their ratio, and each process's
peak resident memory. The machine may be shared: compare the ratios of one run.

    python benchmarks/peers.py [--out runs/bench-peers] [--models fashion,resnet50] [--iters 50] [--rounds 3]
    python benchmarks/peers.py --only-quantize-speed [--quantize-rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from resdeploy import _onnx
from resdeploy.data import calibration_batches, load_dataset
from resdeploy.device import environment
from resdeploy.export import export_onnx
from resdeploy.measure import BenchConfig, EvalConfig, benchmark_isolated, evaluate
from resdeploy.models import load_model
from resdeploy.preprocess import Preprocess
from resdeploy.quantize import QuantizeConfig, quantize
from resdeploy.runtime import Artifact

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"fashion": "zoo:fashion-resnet18", "resnet50": "resnet50"}
LIMIT = {"fashion": 10_000, "resnet50": 500}
CALIB = {"fashion": 512, "resnet50": 128}  # ORT's default MinMax keeps every activation in memory

_OV_DEFAULT = r"""
import json, sys, time, numpy as np, openvino as ov
from resdeploy.data import load_dataset
from resdeploy.runtime import Artifact
path, batches, iters, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
art = Artifact.resolve(path)
pre = art.preprocess()
compiled = ov.Core().compile_model(path, "CPU")  # OpenVINO's own defaults
req = compiled.create_infer_request()
lat = {}
for b in (int(x) for x in batches.split(",")):
    x = np.random.default_rng(0).standard_normal((b, *pre.input_shape)).astype(np.float32)
    for _ in range(10):
        req.infer({0: x})
    samples = []
    for _ in range(iters):
        t = time.perf_counter(); req.infer({0: x}); samples.append((time.perf_counter() - t) * 1e3)
    lat[b] = float(np.median(samples))
preds = []
if limit:
    test = load_dataset("fashion-mnist:test")
    preds = np.concatenate([np.asarray(req.infer({0: x})[compiled.outputs[0]]).argmax(1)
                            for x, _ in test.batches(pre, 250, np.arange(min(limit, len(test))))]).tolist()
print(json.dumps({"latency": lat, "pred": preds}))
"""


def ort_default_int8(fp32: Path, out: Path, n: int) -> None:
    """The peer: onnxruntime.quantization.quantize_static with its defaults."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    pre = Preprocess.from_metadata(_onnx.metadata(_onnx.load(fp32)))
    assert pre is not None
    batches = calibration_batches(load_dataset("fashion-mnist:train"), pre, input_name="input", size=n, batch_size=16)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader())


def nncf_int8(fp32: Path, out: Path, n: int, peers_python: Path) -> float:
    """NNCF's INT8 of the same FP32 ONNX, in the peers' venv; returns its quantize seconds."""
    pre = Preprocess.from_metadata(_onnx.metadata(_onnx.load(fp32)))
    assert pre is not None
    batches = calibration_batches(load_dataset("fashion-mnist:train"), pre, input_name="input", size=n, batch_size=32)
    calib = out.with_suffix(".calib.npz")
    np.savez(calib, x=np.concatenate([b["input"] for b in batches]))
    proc = subprocess.run([str(peers_python), str(ROOT / "benchmarks" / "_peer_quantize.py"), "nncf", "performance",
                           str(fp32), str(calib), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nncf failed: {proc.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def _p50(path: Path | str, backend: str, cfg: BenchConfig) -> dict[int, float]:
    return {r.batch: r.latency_ms["p50"] for r in benchmark_isolated(str(path), backend, cfg)}


def _ov_default(path: Path, iters: int, limit: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _OV_DEFAULT, str(path), "1,8", str(iters), str(limit)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"OpenVINO default failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _alternated(runners: dict[str, Callable[[], dict[int, float]]], rounds: int) -> dict[str, dict[int, float]]:
    """Median p50 per batch over ``rounds`` alternated rounds (each run alone in its process)."""
    seen: dict[str, list[dict[int, float]]] = {k: [] for k in runners}
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
            seen[name].append(runners[name]())
    return {k: {b: float(np.median([s[b] for s in v])) for b in (1, 8)} for k, v in seen.items()}


def run_model(key: str, out: Path, cfg: BenchConfig, rounds: int, peers_python: Path | None) -> list[dict]:
    spec, limit = MODELS[key], LIMIT[key]
    fp32 = out / f"{key}-fp32.onnx"
    export_onnx(load_model(spec), fp32)
    paths: dict[str, tuple[Path, float]] = {}
    for name, qcfg in (("fp16", QuantizeConfig(precision="fp16")),
                       ("int8-cpu", QuantizeConfig(precision="int8", target="cpu", calib="fashion-mnist:train")),
                       ("int8-tensorrt", QuantizeConfig(precision="int8", target="tensorrt", calib="fashion-mnist:train"))):
        t0 = time.perf_counter()
        quantize(fp32, out / f"{key}-{name}.onnx", qcfg)
        paths[name] = (out / f"{key}-{name}.onnx", time.perf_counter() - t0)
    t0 = time.perf_counter()
    ort_default_int8(fp32, out / f"{key}-ort-default-int8.onnx", CALIB[key])
    paths["ort-default"] = (out / f"{key}-ort-default-int8.onnx", time.perf_counter() - t0)
    if peers_python is not None:
        paths["nncf"] = (out / f"{key}-nncf-int8.onnx", nncf_int8(fp32, out / f"{key}-nncf-int8.onnx", 300, peers_python))
    runs = [("torch eager FP32", spec, "torch", 0.0), ("ONNX Runtime FP32", fp32, "ort-cpu", 0.0),
            ("ONNX Runtime quantize_static defaults", paths["ort-default"][0], "ort-cpu", paths["ort-default"][1]),
            ("resdeploy FP16", paths["fp16"][0], "ort-cpu", paths["fp16"][1])]
    for name in ("int8-cpu", "int8-tensorrt"):
        for backend in ("ort-cpu", "ov-cpu"):
            runs.append((f"resdeploy INT8 {name[5:]} profile on {backend}", paths[name][0], backend, paths[name][1]))
    onnx_runs = [(p, b) for _, p, b, _ in runs if isinstance(p, Path)]
    if "nncf" in paths:
        onnx_runs.append((paths["nncf"][0], "ov-cpu"))
    acc = evaluate([Artifact.resolve(str(p)) for p, _ in onnx_runs], "fashion-mnist:test",
                   backend=[b for _, b in onnx_runs], config=EvalConfig(limit=limit))
    by = {(r.artifact, r.backend): r for r in acc.results}
    rows = []
    for name, path, backend, qsec in runs:
        r = by.get((str(path), backend))
        lat = _p50(path, backend, cfg)
        rows.append({"model": spec, "runtime": name, "p50_b1": lat[1], "p50_b8": lat[8],
                     "top1": r.top1 if r else acc.reference["top1"], "agreement": r.agreement_top1 if r else 1.0,
                     "n": limit, "quantize_s": round(qsec, 1)})
    ov = _ov_default(fp32, cfg.iters, limit)
    labels = load_dataset("fashion-mnist:test").labels[:limit]
    rows.append({"model": spec, "runtime": "OpenVINO defaults on the FP32 ONNX", "p50_b1": ov["latency"]["1"],
                 "p50_b8": ov["latency"]["8"], "top1": float(np.mean(np.asarray(ov["pred"]) == labels)),
                 "agreement": None, "n": limit, "quantize_s": 0.0})
    if "nncf" in paths:
        rows += _head_to_head(spec, paths, by, cfg, rounds, limit)
    return rows


def _head_to_head(spec: str, paths: dict[str, tuple[Path, float]], by: dict, cfg: BenchConfig, rounds: int,
                  limit: int) -> list[dict]:
    """NNCF + OpenVINO at its fastest (OpenVINO's defaults, or ov-cpu's settings) against resdeploy's
    cpu profile on its fastest CPU backend (ort-cpu or ov-cpu), all four timed in alternated rounds."""
    nncf_path, nncf_s = paths["nncf"]
    ours_path = paths["int8-cpu"][0]
    med = _alternated({
        "resdeploy ort-cpu": lambda: _p50(ours_path, "ort-cpu", cfg),
        "resdeploy ov-cpu": lambda: _p50(ours_path, "ov-cpu", cfg),
        "nncf ov-cpu": lambda: _p50(nncf_path, "ov-cpu", cfg),
        "nncf openvino defaults": lambda: {int(b): v for b, v in _ov_default(nncf_path, cfg.iters, 0)["latency"].items()},
    }, rounds)
    ours = min(("ort-cpu", "ov-cpu"), key=lambda b: med[f"resdeploy {b}"][1])
    nncf_lat = {b: min(med["nncf ov-cpu"][b], med["nncf openvino defaults"][b]) for b in (1, 8)}
    our_lat = med[f"resdeploy {ours}"]
    nncf_acc, our_acc = by[(str(nncf_path), "ov-cpu")], by[(str(ours_path), ours)]
    return [
        {"model": spec, "runtime": "NNCF INT8 + OpenVINO (its fastest settings, alternated rounds)",
         "p50_b1": nncf_lat[1], "p50_b8": nncf_lat[8], "top1": nncf_acc.top1, "agreement": nncf_acc.agreement_top1,
         "n": limit, "quantize_s": round(nncf_s, 1), "rounds": med},
        {"model": spec, "runtime": f"resdeploy INT8 cpu profile on {ours} (alternated rounds)", "p50_b1": our_lat[1],
         "p50_b8": our_lat[8], "top1": our_acc.top1, "agreement": our_acc.agreement_top1, "n": limit,
         "quantize_s": round(paths["int8-cpu"][1], 1),
         "ratio_vs_nncf": {b: our_lat[b] / nncf_lat[b] for b in (1, 8)}},
    ]


def _print(rows: list[dict], env: dict) -> None:
    print(f"\n{env['cpu']}, {env['cores']} cores; each runtime timed alone in its own process; p50 latency")
    print(f"{'model':22} {'runtime':62} {'b1 ms':>8} {'b8 ms':>8} {'x torch':>8} {'top-1 %':>8} {'agree %':>8}")
    torch_b1 = {r["model"]: r["p50_b1"] for r in rows if r["runtime"] == "torch eager FP32"}
    for r in rows:
        top1 = f"{100 * r['top1']:.2f}" if r["model"].startswith("zoo:") else "n/a"
        agree = f"{100 * r['agreement']:.2f}" if r.get("agreement") is not None else "-"
        print(f"{r['model']:22} {r['runtime']:62} {r['p50_b1']:8.2f} {r['p50_b8']:8.2f} "
              f"{torch_b1[r['model']] / r['p50_b1']:8.1f} {top1:>8} {agree:>8}")
    for r in rows:
        if "ratio_vs_nncf" in r:
            ratio = r["ratio_vs_nncf"]
            print(f"{r['model']}: resdeploy INT8 / NNCF+OpenVINO INT8 latency: batch 1 {ratio[1]:.3f}, "
                  f"batch 8 {ratio[8]:.3f} (target <= 1.0)")


def _run_measured(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak resident MiB, stdout) of ``cmd``, its own process, by wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {(err.strip().splitlines() or ['?'])[-1]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, out


def quantize_speed(out: Path, peers_python: Path | None, rounds: int) -> list[dict]:
    """resdeploy quantize (each target, defaults) against nncf.quantize on the same ONNX and images."""
    fp32 = out / "resnet50-fp32.onnx"
    if not fp32.is_file():
        export_onnx(load_model("resnet50"), fp32)
    pre = Preprocess.from_metadata(_onnx.metadata(_onnx.load(fp32)))
    assert pre is not None
    calib = out / "resnet50-calib128.npz"
    batches = calibration_batches(load_dataset("fashion-mnist:train"), pre, input_name="input", size=128, batch_size=32)
    np.savez(calib, x=np.concatenate([b["input"] for b in batches]), y=np.arange(128, dtype=np.int64) % 10)
    runners: dict[str, list[str]] = {
        f"resdeploy {t}": [sys.executable, "-m", "resdeploy", "quantize", str(fp32), "-o", str(out / f"r50-{t}.onnx"),
                           "--precision", "int8", "--target", t, "--calib", str(calib), "--calib-size", "128"]
        for t in ("tensorrt", "cpu")}
    if peers_python is not None:
        runners["nncf"] = [str(peers_python), str(ROOT / "benchmarks" / "_peer_quantize.py"), "nncf", "performance",
                           str(fp32), str(calib), str(out / "r50-nncf.onnx")]
    seen: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in runners}
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
            wall, cpu, rss, stdout = _run_measured(runners[name])
            inner = float(json.loads(stdout.strip().splitlines()[-1])["seconds"]) if name == "nncf" else wall
            seen[name].append((wall, inner, cpu, rss))
            print(f"  round {r + 1}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak {rss:.0f} MiB", file=sys.stderr)
    med = {k: (*tuple(float(np.median([v[i] for v in vs])) for i in range(3)), max(v[3] for v in vs))
           for k, vs in seen.items()}
    rows = []
    for name, (wall, inner, cpu, rss) in med.items():
        row = {"tool": name, "wall_s": round(wall, 2), "call_s": round(inner, 2), "cpu_s": round(cpu, 2),
               "peak_rss_mib": round(rss), "rounds": rounds}
        if "nncf" in med and name != "nncf":
            row["ratio_to_nncf_call"] = round(wall / med["nncf"][1], 3)
            row["ratio_to_nncf_process"] = round(wall / med["nncf"][0], 3)
            row["cpu_ratio_to_nncf_process"] = round(cpu / med["nncf"][2], 3)
        rows.append(row)
    return rows


def _print_speed(rows: list[dict]) -> None:
    print("\nquantize ResNet-50 at 224 px, 128 images (median of alternated rounds, each in its own process):")
    for r in rows:
        ratio = (f"; wall / nncf.quantize call {r['ratio_to_nncf_call']:.2f}x, wall / NNCF process "
                 f"{r['ratio_to_nncf_process']:.2f}x, CPU / NNCF process CPU {r['cpu_ratio_to_nncf_process']:.2f}x"
                 if "ratio_to_nncf_call" in r else (f" (nncf.quantize call {r['call_s']:.1f} s)" if r["tool"] == "nncf" else ""))
        print(f"  {r['tool']:20} {r['wall_s']:7.1f} s wall, {r['cpu_s']:6.1f} s CPU, peak {r['peak_rss_mib']:6.0f} MiB{ratio}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-peers")
    ap.add_argument("--models", default="fashion,resnet50")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    ap.add_argument("--quantize-speed", action="store_true", help="also time quantize against nncf.quantize")
    ap.add_argument("--only-quantize-speed", action="store_true", help="only time quantize against nncf.quantize")
    ap.add_argument("--quantize-rounds", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peers_python = Path(args.peers_python) if Path(args.peers_python).is_file() else None
    if peers_python is None:
        print(f"no peers venv at {args.peers_python} (make peers-venv): no NNCF rows", file=sys.stderr)
    if args.only_quantize_speed or args.quantize_speed:
        speed = quantize_speed(out, peers_python, args.quantize_rounds)
        _print_speed(speed)
        (out / "quantize_speed.json").write_text(json.dumps({"rows": speed, "env": environment(None, "one process per tool")},
                                                            indent=2))
        if args.only_quantize_speed:
            return 0
    cfg = BenchConfig(batches=(1, 8), iters=args.iters, warmup=10, max_seconds=30.0)
    start = time.perf_counter()
    rows = [r for key in args.models.split(",") for r in run_model(key, out, cfg, args.rounds, peers_python)]
    env = environment(None, "one process per runtime")
    _print(rows, env)
    print(f"{time.perf_counter() - start:.0f} s")
    (out / "results.json").write_text(json.dumps({"rows": rows, "env": env}, indent=2))
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
