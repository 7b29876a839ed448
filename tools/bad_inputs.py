"""The catalogue of bad inputs, run apart from the suite as a new user would meet them.

Each case runs ``python -m resdeploy ...`` in a process of its own and must: exit with its code
(2 for bad usage or input, 130 for Ctrl-C), print exactly one ``error:`` line on stderr and no
traceback, and leave nothing under the output names it asked for (or leave what was there
untouched). The pickle case must also have no side effect of unpickling.

    python tools/bad_inputs.py [--keep DIR] [-k SUBSTRING]

Needs the zoo model (trained on first use) and Fashion-MNIST; prints one line per case and a
summary, exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Case:
    name: str
    argv: list[str]
    code: int = 2
    needle: str = ""                                   # in the error line, case-insensitive
    absent: list[Path] = field(default_factory=list)    # must not exist afterwards
    empty: list[Path] = field(default_factory=list)     # directories that must stay empty
    interrupt_when: Path | None = None                  # SIGINT once this stage record names "export"


def _onnx_fixtures(d: Path) -> Path:
    import onnx

    fp32 = d / "fp32.onnx"
    subprocess.run([sys.executable, "-m", "resdeploy", "-q", "export", "zoo:fashion-resnet18", "-o", str(fp32)],
                   check=True)
    (d / "garbage.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "text.onnx").write_text("not a model\n")
    (d / "empty.onnx").write_bytes(b"")
    model = onnx.load(str(fp32))
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../secret.bin")
    (d / "ext").mkdir()
    onnx.save(model, str(d / "ext" / "model.onnx"))
    (d / "secret.bin").write_bytes(b"\0" * 64)
    return fp32


class _Payload:
    """Unpickling this creates a file: the side effect a refused pickle must never have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _model_fixtures(d: Path) -> None:
    import torch
    import torchvision

    torch.save(_Payload(d / "PWNED"), d / "evil.pt")
    torch.save(torchvision.models.resnet34(num_classes=10).state_dict(), d / "r34.pth")
    (d / "garbage.pth").write_bytes(np.random.default_rng(1).bytes(1000))


def _npz_fixtures(d: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(64) % 10
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    x_nan = x.copy()
    x_nan[3, 0, 0, 0] = np.nan
    np.savez(d / "nan.npz", x=x_nan, y=y)
    x_inf = x.copy()
    x_inf[5, 1, 2, 3] = np.inf
    np.savez(d / "inf.npz", x=x_inf, y=y)
    np.savez(d / "const.npz", x=np.full_like(x, 0.5), y=y)
    np.savez(d / "grey.npz", x=x[:, :1], y=y)
    np.savez(d / "nolabels.npz", x=x)
    np.savez(d / "shortlabels.npz", x=x, y=y[:10])
    np.savez(d / "badlabels.npz", x=x, y=y + 50)


def _folder(root: Path, classes: int, per_class: int = 2) -> Path:
    from PIL import Image

    for c in range(classes):
        sub = root / f"c{c:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), (c * 20, i * 50, 90)).save(sub / f"{i}.png")
    return root


def _image_fixtures(d: Path) -> None:
    from PIL import Image

    _folder(d / "eleven", 11)
    (_folder(d / "emptyclass", 10) / "c09" / "0.png").unlink()
    (d / "emptyclass" / "c09" / "1.png").unlink()
    (_folder(d / "zerobyte", 10) / "c03" / "bad.jpg").write_bytes(b"")
    png = (_folder(d / "truncated", 10) / "c04" / "0.png").read_bytes()
    (d / "truncated" / "c04" / "0.png").write_bytes(png[: len(png) // 2])
    (_folder(d / "notimage", 10) / "c01" / "x.jpg").write_text("this is text")
    Image.new("1", (14_000, 13_000)).save(_folder(d / "bomb", 10) / "c02" / "big.png")
    (d / "noclasses").mkdir()
    (d / "noclasses" / "README.txt").write_text("no images here")


def _toml_fixtures(d: Path) -> None:
    (d / "syntax.toml").write_text("model = \n")
    (d / "batch.toml").write_text('batch = "1,abc"\n')
    (d / "pickle.toml").write_text('trust-pickle = "yes"\n')
    (d / "unknown.toml").write_text('modle = "resnet18"\n')
    (d / "iters.toml").write_text("iters = -4\n")
    (d / "precisions.toml").write_text('precisions = ["fp32", "int4"]\n')
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00bad")


def _cases(d: Path, fp32: Path) -> list[Case]:
    out, outdir, existing = d / "out.onnx", d / "outdir", d / "existing_dir"
    existing.mkdir()
    (d / "a_file").write_text("x")
    fm = "fashion-mnist:test"
    static = ["--min-batch", "1", "--opt-batch", "1", "--max-batch", "1"]
    return [
        # MODEL specs and files
        Case("unknown builder", ["export", "resnet19", "-o", str(out)], needle="resnet19", absent=[out]),
        Case("unknown zoo model", ["export", "zoo:nope", "-o", str(out)], needle="zoo", absent=[out]),
        Case("factory not importable", ["export", "nomod_xyz:make", "-o", str(out)], needle="nomod_xyz", absent=[out]),
        Case("model file missing", ["export", str(d / "nope.pt"), "-o", str(out)], absent=[out]),
        Case("pickle refused, not run", ["export", str(d / "evil.pt"), "-o", str(out)], needle="--trust-pickle",
             absent=[out, d / "PWNED"]),
        Case("weights enum unknown", ["export", "resnet18", "--weights", "NOPE", "-o", str(out)], needle="NOPE",
             absent=[out]),
        Case("weights offline", ["export", "resnet18", "--weights", "IMAGENET1K_V1", "-o", str(out)], absent=[out]),
        Case("weights file missing", ["export", "resnet18", "--weights", str(d / "no.pth"), "-o", str(out)],
             absent=[out]),
        Case("weights file garbage", ["export", "resnet18", "--weights", str(d / "garbage.pth"), "-o", str(out)],
             absent=[out]),
        Case("weights of another arch", ["export", "resnet18", "--weights", str(d / "r34.pth"), "-o", str(out)],
             absent=[out]),
        Case("input size zero", ["export", "resnet18", "--input-size", "0", "-o", str(out)], absent=[out]),
        Case("mean with two values", ["export", "resnet18", "--mean", "1,2", "-o", str(out)], needle="mean",
             absent=[out]),
        Case("std zero", ["export", "resnet18", "--std", "0,0,0", "-o", str(out)], needle="std", absent=[out]),
        Case("opset too old", ["export", "resnet18", "--opset", "7", "-o", str(out)], needle="opset", absent=[out]),
        Case("batch zero", ["export", "resnet18", "--batch", "0", "-o", str(out)], absent=[out]),
        Case("num-classes negative", ["export", "resnet18", "--num-classes", "-3", "-o", str(out)], absent=[out]),
        # output paths
        Case("output is a directory", ["export", "resnet18", "-o", str(existing)], empty=[existing]),
        Case("output folder missing", ["export", "resnet18", "-o", str(d / "no" / "x.onnx")],
             absent=[d / "no"]),
        Case("output unwritable", ["export", "resnet18", "-o", "/proc/resdeploy.onnx"]),
        # ONNX inputs
        Case("fold-bn missing file", ["fold-bn", str(d / "nope.onnx"), "-o", str(out)], absent=[out]),
        Case("fold-bn garbage", ["fold-bn", str(d / "garbage.onnx"), "-o", str(out)], absent=[out]),
        Case("quantize text file", ["quantize", str(d / "text.onnx"), "-o", str(out), "--precision", "fp16"],
             absent=[out]),
        Case("quantize empty file", ["quantize", str(d / "empty.onnx"), "-o", str(out), "--precision", "fp16"],
             absent=[out]),
        Case("external data outside folder", ["quantize", str(d / "ext" / "model.onnx"), "-o", str(out),
                                              "--precision", "fp16"], needle="outside", absent=[out]),
        Case("precision unknown", ["quantize", str(fp32), "-o", str(out), "--precision", "int4"], absent=[out]),
        Case("int8 without calib", ["quantize", str(fp32), "-o", str(out), "--precision", "int8"], needle="--calib",
             absent=[out]),
        Case("calib data missing", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib",
                                    str(d / "nope")], absent=[out]),
        Case("calib NaN", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib",
                           str(d / "nan.npz")], needle="nan", absent=[out]),
        Case("calib Inf", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib",
                           str(d / "inf.npz")], absent=[out]),
        Case("calib constant", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib",
                                str(d / "const.npz")], needle="constant", absent=[out]),
        Case("calib one channel", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib",
                                   str(d / "grey.npz")], absent=[out]),
        Case("calib npz without y", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib",
                                     str(d / "nolabels.npz")], absent=[out]),
        Case("calib-size zero", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib", fm,
                                 "--calib-size", "0"], absent=[out]),
        Case("max-drop without val", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib", fm,
                                      "--max-drop", "0.5"], needle="--val", absent=[out]),
        Case("max-drop negative", ["quantize", str(fp32), "-o", str(out), "--precision", "int8", "--calib", fm,
                                   "--val", fm, "--max-drop", "-1"], absent=[out]),
        # TensorRT without TensorRT, and bad recipes
        Case("build without TensorRT", ["build", str(fp32), "-o", str(d / "x.plan"), "--runtime", "tensorrt"],
             needle="tensorrt",
             absent=[d / "x.plan"]),
        Case("trtexec for TensorRT 7", ["build", str(fp32), "-o", str(d / "x.plan"), "--print-trtexec",
                                        "--trt-version", "7.1"], absent=[d / "x.plan"]),
        Case("DLA on TensorRT 11.0", ["build", str(fp32), "-o", str(d / "x.plan"), "--print-trtexec",
                                      "--trt-version", "11.0", "--dla-core", "0", *static], needle="11.4.1",
             absent=[d / "x.plan"]),
        Case("profile min > max", ["build", str(fp32), "-o", str(d / "x.plan"), "--print-trtexec", "--min-batch",
                                   "8", "--max-batch", "1"], absent=[d / "x.plan"]),
        # bench and eval
        Case("bench backend unknown", ["bench", str(fp32), "--backend", "onnx-gpu"]),
        Case("bench tensorrt not installed", ["bench", str(fp32), "--backend", "tensorrt"], needle="tensorrt"),
        Case("bench batch list bad", ["bench", str(fp32), "--batch", "1,abc"]),
        Case("bench artifact missing", ["bench", str(d / "nope.onnx")]),
        Case("bench json is a directory", ["bench", str(fp32), "--iters", "2", "--batch", "1", "--json",
                                           str(existing)], empty=[existing]),
        Case("eval data unknown", ["eval", str(fp32), "--data", "fashion-mnist:val"]),
        Case("eval npz labels out of range", ["eval", str(fp32), "--data", str(d / "badlabels.npz")]),
        Case("eval npz labels short", ["eval", str(fp32), "--data", str(d / "shortlabels.npz")]),
        Case("eval more classes than outputs", ["eval", str(fp32), "--data", str(d / "eleven")], needle="11"),
        Case("eval empty class folder", ["eval", str(fp32), "--data", str(d / "emptyclass")], needle="c09"),
        Case("eval zero-byte image", ["eval", str(fp32), "--data", str(d / "zerobyte")], needle="bad.jpg"),
        Case("eval truncated image", ["eval", str(fp32), "--data", str(d / "truncated")], needle="0.png"),
        Case("eval text named .jpg", ["eval", str(fp32), "--data", str(d / "notimage")], needle="x.jpg"),
        Case("eval decompression bomb", ["eval", str(fp32), "--data", str(d / "bomb")], needle="big.png"),
        Case("eval folder without images", ["eval", str(fp32), "--data", str(d / "noclasses")]),
        Case("eval reference pickle", ["eval", str(fp32), "--data", fm, "--limit", "16", "--reference",
                                       str(d / "evil.pt")], needle="--trust-pickle", absent=[d / "PWNED"]),
        # run, its config and its OUTDIR
        Case("config missing", ["run", str(d / "nope.toml"), "-o", str(outdir)], absent=[outdir]),
        Case("config syntax", ["run", str(d / "syntax.toml"), "-o", str(outdir)], absent=[outdir]),
        Case("config not text", ["run", str(d / "binary.toml"), "-o", str(outdir)], absent=[outdir]),
        Case("config batch wrong type", ["run", str(d / "batch.toml"), "-o", str(outdir)], needle="batch",
             absent=[outdir]),
        Case("config trust-pickle string", ["run", str(d / "pickle.toml"), "-o", str(outdir)],
             needle="trust-pickle", absent=[outdir]),
        Case("config unknown key", ["run", str(d / "unknown.toml"), "-o", str(outdir)], needle="modle",
             absent=[outdir]),
        Case("config negative iters", ["run", str(d / "iters.toml"), "-o", str(outdir)], needle="iters",
             absent=[outdir]),
        Case("config unknown precision", ["run", str(d / "precisions.toml"), "-o", str(outdir)], needle="int4",
             absent=[outdir]),
        Case("run precisions flag bad", ["run", "--precisions", "fp32,int3", "-o", str(outdir)], absent=[outdir]),
        Case("OUTDIR is a file", ["run", "-o", str(d / "a_file")]),
        Case("OUTDIR unwritable", ["run", "-o", "/proc/resdeploy-out"]),
        Case("run Ctrl-C after export", ["run", "--precisions", "fp32,int8", "--targets", "cpu", "--val-limit", "200",
                                         "--calib-size", "64", "--batch", "1", "--iters", "3", "-o",
                                         str(d / "interrupted")], code=130, needle="interrupted",
             interrupt_when=d / "interrupted" / ".resdeploy-stages.json"),
        # bundle and verify
        Case("bundle of no run", ["bundle", str(existing)], empty=[existing]),
        Case("verify not a bundle", ["verify", str(existing)], empty=[existing]),
        Case("verify missing folder", ["verify", str(d / "nobundle")]),
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _run_case(case: Case) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "resdeploy", *case.argv]
    # SIGINT as a terminal leaves it (a background job of a non-interactive shell inherits it ignored)
    reset = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if case.interrupt_when else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=reset)
    if case.interrupt_when is not None:
        deadline = time.time() + 600
        while "export" not in _read(case.interrupt_when) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # in the quantize stage
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err


def _check(case: Case, code: int, err: str) -> list[str]:
    problems = []
    if code != case.code:
        problems.append(f"exit {code}, expected {case.code}")
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif case.needle.lower() not in errors[0].lower():
        problems.append(f"error line does not name {case.needle!r}")
    if "Traceback" in err:
        problems.append("traceback")
    problems += [f"{p} exists" for p in case.absent if p.exists()]
    problems += [f"{p} not empty" for p in case.empty if any(p.iterdir())]
    if case.interrupt_when is not None:
        problems += [f"{p} does not load" for p in case.interrupt_when.parent.glob("*.onnx") if not _loads(p)]
    return problems


def _loads(path: Path) -> bool:
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)))
    except Exception:  # noqa: BLE001 - whatever fails to load is what this looks for
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", metavar="DIR", help="build the fixtures in DIR and keep them")
    ap.add_argument("-k", dest="select", default="", help="only cases whose name contains this")
    args = ap.parse_args()
    d = Path(args.keep or tempfile.mkdtemp(prefix="resdeploy-bad-")).resolve()
    d.mkdir(parents=True, exist_ok=True)
    fp32 = _onnx_fixtures(d)
    _model_fixtures(d)
    _npz_fixtures(d)
    _image_fixtures(d)
    _toml_fixtures(d)
    failed, results = 0, []
    for case in (c for c in _cases(d, fp32) if args.select in c.name):
        t0 = time.perf_counter()
        code, err = _run_case(case)
        problems = _check(case, code, err)
        failed += bool(problems)
        line = next((ln for ln in err.splitlines() if ln.startswith("error:")), err.strip()[-200:])
        mark = "ok  " if not problems else "FAIL"
        print(f"{mark} {case.name:32} exit {code:3}  {time.perf_counter() - t0:5.1f}s  {line[:150]}")
        for p in problems:
            print(f"       {p}")
        results.append({"case": case.name, "exit": code, "problems": problems, "error": line})
    print(f"{len(results) - failed}/{len(results)} cases behave")
    (d / "bad_inputs.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
