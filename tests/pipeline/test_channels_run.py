"""`run` end to end for the models users train beyond N x 3 x S x S: the grey zoo model (1 x 28 x 28,
native Fashion-MNIST) and an ONNX from another tool at 64 x 48 (input ``images``, opset 13,
BatchNormalization kept): export (or taking the ONNX in), both INT8 targets, TensorRT-RTX engines
built by NVIDIA's own builder where it is installed, eval, bench, bundle, Triton configs and verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resdeploy import cli
from resdeploy._tensorrt import import_builder

from ..test_channels import plain_export, tiny_resnet

QUICK = ("--precisions", "fp32,int8", "--targets", "cpu,tensorrt", "--batch", "1", "--iters", "3", "--warmup", "1",
         "--max-seconds", "2", "--calib-size", "64")
RTX = import_builder("tensorrt_rtx") is not None


def _run(out: Path, *args: str) -> dict:
    assert cli.main(["run", *QUICK, "-o", str(out), "--triton-repo", str(out / "triton"), *args]) == 0
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("grey") / "out"
    return out, _run(out, "--model", "zoo:fashion-resnet18-gray", "--val-limit", "300")


@pytest.fixture(scope="module")
def rect_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("rect")
    src = plain_export(tiny_resnet(3), folder / "rect.onnx", (1, 3, 64, 48))
    out = folder / "out"
    return out, _run(out, "--model", str(src), "--input-size", "64,48", "--mean", "0.286", "--std", "0.353",
                     "--val-limit", "100")


def _check_shapes(out: Path, report: dict, input_name: str, output_name: str, chw: tuple[int, int, int]) -> None:
    dims = "x".join(map(str, chw))
    script = (out / "trtexec.sh").read_text()
    assert f"--minShapes={input_name}:1x{dims}" in script and f"--maxShapes={input_name}:32x{dims}" in script
    configs = list((out / "triton").glob("*/config.pbtxt"))
    assert configs
    for cfg in configs:
        text = cfg.read_text()
        assert f"dims: [ {', '.join(map(str, chw))} ]" in text and f'name: "{output_name}"' in text
    if RTX:  # NVIDIA's parser and builder read the TensorRT-targeted variants at this shape
        built = {e["variant"] for e in report["engines"]}
        assert built == {"fp32", "int8-tensorrt"}
        for e in report["engines"]:
            record = json.loads(Path(e["artifact"] + ".json").read_text())
            assert record["profile"][input_name]["opt"] == [1, *chw]
    doc = json.loads((out / "bundle" / "bundle.json").read_text())
    assert doc["model"]["input_shape"] == list(chw) and doc["model"]["output_name"] == output_name
    assert cli.main(["verify", str(out / "bundle"), "--backend", "ort-cpu", "--json", str(out / "v.json")]) == 0
    results = json.loads((out / "v.json").read_text())["results"]
    assert {r["variant"] for r in results} == {"fp32", "int8-cpu", "int8-tensorrt"} and all(r["passed"] for r in results)


def test_grey_model_runs_through_every_stage(grey_run) -> None:
    out, report = grey_run
    _check_shapes(out, report, "input", "logits", (1, 28, 28))
    ref = report["reference"]
    assert ref["n"] == 300 and ref["top1"] >= 0.8
    int8 = [v for v in report["variants"] if v["precision"] == "int8" and v["backend"] == "ort-cpu"]
    assert {v["target"] for v in int8} == {"cpu", "tensorrt"}
    for v in int8:  # 300 images: 1 pp is 3 images
        assert v["accuracy"]["agreement_top1"] >= 0.97 and ref["top1"] - v["accuracy"]["top1"] <= 0.01, v


def test_foreign_rectangular_onnx_runs_through_every_stage(rect_run) -> None:
    out, report = rect_run
    _check_shapes(out, report, "images", "output", (3, 64, 48))
    export = report["model"]["export"]
    assert export["source"] == "onnx" and export["bn_folded_onnx"] == export["bn_in_model"] > 0
    assert report["reference"]["artifact"].endswith("rect.onnx")  # its own reference, on ONNX Runtime
    assert not any(v["backend"].startswith("torch") for v in report["variants"])
    assert "FP32 ONNX (as given) reference" in (out / "report.md").read_text()
