"""``resdeploy eval`` at the speed of its models, measured side by side in one run.

400 ImageNet-sized JPEGs (500x375, an ImageFolder of 10 classes, written once), ResNet-50 (seed-0
weights, 224 px ImageNet preprocessing) as FP32 ONNX and resdeploy INT8 (cpu profile), and the
torch FP32 reference. Timed, each in a process of its own with a cold reference-logits cache:

  eval   `resdeploy eval FP32.onnx INT8.onnx --data DIR` (reference first, then each model)
  alone  each model's compute over the same 400 preprocessed images (torch, ORT FP32, ORT INT8)
  decode one decode-and-resize pass over the 400 JPEGs (PIL, single thread, as a plain loop would)

and prints eval / (sum of alone + decode): the target is at most 1.2.

    python benchmarks/eval_speed.py [--out runs/eval-speed] [--images 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_jpegs(root: Path, n: int) -> None:
    """Smooth random scenes (JPEG-compressible like photos), 500x375, 10 class folders."""
    from PIL import Image

    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == n:
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        img.save(d / f"{i:04d}.jpg", quality=90)


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds, proc.stdout


_ALONE = r"""
import json, sys, time, numpy as np
from resdeploy.data import load_dataset
from resdeploy.runtime import Artifact, open_session
art = Artifact.resolve(sys.argv[1])
backend = sys.argv[2]
ds = load_dataset(sys.argv[3])
pre = art.preprocess()
x = ds.take(np.arange(len(ds)), pre, workers=4)
with open_session(art, backend) as s:
    s.infer({s.input_name: x[:250]})  # warm-up, as eval's first batch is
    t0 = time.perf_counter()
    for i in range(0, len(x), 250):
        s.infer({s.input_name: x[i:i + 250]})
    print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

_DECODE = r"""
import json, sys, time
from resdeploy.data import load_dataset, read_image
from resdeploy.preprocess import IMAGENET
ds = load_dataset(sys.argv[1])
IMAGENET.resize([read_image(ds.files[0])])  # imports torch and torchvision outside the timing
t0 = time.perf_counter()
for f in ds.files:
    IMAGENET.resize([read_image(f)])
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/eval-speed")
    ap.add_argument("--images", type=int, default=400)
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "jpegs"
    make_jpegs(data, args.images)
    fp32, int8 = out / "r50-fp32.onnx", out / "r50-int8-cpu.onnx"
    py = sys.executable
    if not fp32.is_file():
        subprocess.run([py, "-m", "resdeploy", "-q", "export", "resnet50", "-o", str(fp32)], check=True)
    if not int8.is_file():
        subprocess.run([py, "-m", "resdeploy", "-q", "quantize", str(fp32), "-o", str(int8), "--precision", "int8",
                        "--target", "cpu", "--calib", str(data), "--calib-size", "64"], check=True)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "RESDEPLOY_CACHE": cache}  # a cold reference-logits cache
        eval_s, _ = _timed([py, "-m", "resdeploy", "-q", "eval", str(fp32), str(int8), "--data", str(data),
                                 "--json", str(out / "eval.json")], env)
        alone = {name: json.loads(_timed([py, "-c", _ALONE, art, backend, str(data)], env)[1])["seconds"]
                 for name, art, backend in (("torch FP32", "resnet50", "torch"), ("ORT FP32", str(fp32), "ort-cpu"),
                                            ("ORT INT8", str(int8), "ort-cpu"))}
        decode = json.loads(_timed([py, "-c", _DECODE, str(data)], env)[1])["seconds"]
    timing = json.loads((out / "eval.json").read_text())["timing"]
    budget = sum(alone.values()) + decode
    print(f"{args.images} JPEGs 500x375, ResNet-50 at 224 px, {os.cpu_count()} cores")
    for name, s in alone.items():
        print(f"  {name:12} alone   {s:7.2f} s")
    print(f"  decode pass          {decode:7.2f} s (PIL, one thread)")
    print(f"  sum                  {budget:7.2f} s")
    print(f"  resdeploy eval       {eval_s:7.2f} s (process; its own decode {timing['decode_seconds']:.2f} s, "
          f"wall inside {timing['wall_seconds']:.2f} s)")
    print(f"ratio eval / (alone + decode) = {eval_s / budget:.3f} (target <= 1.2)")
    (out / "eval_speed.json").write_text(json.dumps({"alone": alone, "decode": decode, "eval": eval_s,
                                                      "ratio": eval_s / budget, "timing": timing}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
