"""eval: accuracy equals torch's, agreement with the FP32 reference, every DATA kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resdeploy.data import load_dataset
from resdeploy.measure import evaluate
from resdeploy.models import load_model
from resdeploy.runtime import Artifact

from ..conftest import assert_clean_error, zoo_torch_top1


@pytest.fixture(scope="module")
def torch_top1() -> float:
    return zoo_torch_top1()


def test_eval_matches_torch_on_all_test_images(zoo_onnx: Path, tmp_path: Path, run_cli, torch_top1: float) -> None:
    out = tmp_path / "e.json"
    r = run_cli("eval", zoo_onnx, "--data", "fashion-mnist:test", "--json", out)
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    res = data["results"][0]
    assert set(res) >= {"artifact", "backend", "precision", "n", "top1", "top5", "agreement_top1", "max_abs_logit_err"}
    assert res["n"] == 10_000 and data["reference"]["n"] == 10_000
    assert data["reference"]["artifact"] == "zoo:fashion-resnet18"
    assert abs(res["top1"] - torch_top1) <= 0.0005
    assert abs(data["reference"]["top1"] - torch_top1) < 1e-9
    assert res["agreement_top1"] >= 0.999
    assert res["max_abs_logit_err"] < 1e-3
    assert res["top1"] <= res["top5"] <= 1.0


def _fashion_subset(n: int) -> tuple[np.ndarray, np.ndarray]:
    test = load_dataset("fashion-mnist:test")
    assert test.images is not None
    return test.images[:n], test.labels[:n]


def test_eval_image_folder_of_pngs(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    images, labels = _fashion_subset(60)
    root = tmp_path / "folder"
    for i, (im, y) in enumerate(zip(images, labels, strict=True)):
        d = root / f"class{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:03d}.png")
    # ImageFolder sorts class names: make sure all ten are present so indices match labels.
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        if not any((root / f"class{c}").iterdir()):
            Image.fromarray(images[0]).save(root / f"class{c}" / "pad.png")
    folder_json = tmp_path / "f.json"
    assert run_cli("eval", zoo_onnx, "--data", root, "--json", folder_json).code == 0
    res = json.loads(folder_json.read_text())["results"][0]
    assert res["n"] == len(load_dataset(str(root)))
    assert res["agreement_top1"] == 1.0
    assert res["top1"] > 0.7


def test_eval_npz(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    loaded = load_model("zoo:fashion-resnet18")
    images, labels = _fashion_subset(200)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=loaded.preprocess.apply(images), y=labels)
    out = tmp_path / "n.json"
    r = run_cli("eval", zoo_onnx, "--data", npz, "--json", out)
    assert r.code == 0, r.err
    res = json.loads(out.read_text())["results"][0]
    with torch.no_grad():
        expected = (loaded.module(torch.from_numpy(loaded.preprocess.apply(images))).argmax(1).numpy() == labels).mean()
    assert res["n"] == 200 and abs(res["top1"] - expected) < 1e-9


def test_eval_limit_and_onnx_reference(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "e.json"
    r = run_cli("eval", zoo_onnx, "--data", "fashion-mnist:test", "--limit", "300", "--reference", zoo_onnx, "--json", out)
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    assert data["results"][0]["n"] == 300 and data["reference"]["backend"] == "ort-cpu"
    assert data["results"][0]["agreement_top1"] == 1.0 and data["results"][0]["max_abs_logit_err"] == 0.0


def test_eval_missing_artifact(tmp_path: Path, run_cli) -> None:
    assert_clean_error(run_cli("eval", tmp_path / "x.onnx", "--data", "fashion-mnist:test"), 2, "not found")


def test_eval_unknown_data_spec(zoo_onnx: Path, run_cli) -> None:
    assert_clean_error(run_cli("eval", zoo_onnx, "--data", "imagenet-val"), 2, "unknown data spec")


def test_eval_backend_not_installed(zoo_onnx: Path, run_cli) -> None:
    assert_clean_error(run_cli("eval", zoo_onnx, "--data", "fashion-mnist:test", "--backend", "ort-cuda"), 2, "unavailable")


def test_openvino_and_onnxruntime_agree_on_the_int8_demo(zoo_onnx: Path, tmp_path: Path) -> None:
    """ov-cpu runs resdeploy's INT8 with OpenVINO's kernels: on all 10,000 demo test images its
    top-1 matches ONNX Runtime's on at least 99.5 % (measured: see README)."""
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'resdeploy[openvino]'")
    from resdeploy.quantize import QuantizeConfig, quantize

    int8 = tmp_path / "int8-cpu.onnx"
    quantize(zoo_onnx, int8, QuantizeConfig(precision="int8", target="cpu", calib="fashion-mnist:train"))
    art = Artifact.resolve(str(int8))
    report = evaluate([art, art], "fashion-mnist:test", backend=["ort-cpu", "ov-cpu"])
    ort, ov = report.results
    assert (ort.backend, ov.backend) == ("ort-cpu", "ov-cpu") and ov.n == 10_000
    assert ort.predictions is not None and ov.predictions is not None
    assert float(np.mean(ort.predictions == ov.predictions)) >= 0.995
    assert abs(ov.top1 - ort.top1) <= 0.005
