"""The per-layer SQNR report and the statistics behind every accuracy claim, each checked
against an independent computation."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest

from resdeploy import _onnx
from resdeploy.data import load_dataset
from resdeploy.models import load_model
from resdeploy.stats import mcnemar_exact, paired_drop, wilson_interval
from resdeploy.zoo import FASHION_PREPROCESS


def _quantized(zoo_onnx: Path, tmp: Path, target: str) -> tuple[Path, dict]:
    from resdeploy.quantize import QuantizeConfig, quantize

    out = tmp / "int8.onnx"
    quantize(zoo_onnx, out, QuantizeConfig(precision="int8", target=target, calib="fashion-mnist:train",
                                           val="fashion-mnist:test", calib_size=256))
    return out, json.loads(out.with_name("int8.quant.json").read_text())


@pytest.fixture(scope="module")
def int8_report(zoo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _quantized(zoo_onnx, tmp_path_factory.mktemp("layers"), "tensorrt")


@pytest.fixture(scope="module")
def int8_cpu_report(zoo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _quantized(zoo_onnx, tmp_path_factory.mktemp("layers-cpu"), "cpu")


def _consumed(model: onnx.ModelProto, tensor: str) -> str:
    """What the next layer reads: a tensor's DequantizeLinear output when it is quantized."""
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor):
        for dq in (n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]):
            return dq.output[0]
    return tensor


def _independent_sqnr(fp32: Path, int8: Path, tensor: str, images: int) -> float:
    """10 log10(sum ref^2 / sum err^2) over the first ``images`` test images, written from scratch:
    the FP32 tensor against the INT8 model's same tensor as its consumers read it."""
    x = load_dataset("fashion-mnist:test").take(np.arange(images), FASHION_PREPROCESS)
    outs = []
    for path in (fp32, int8):
        model = onnx.load(str(path))
        name = _consumed(model, tensor)
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        outs.append(_onnx.session(model).run([name], {"input": x})[0].astype(np.float64))
    ref, got = outs
    return 10 * math.log10(float(np.sum(ref ** 2)) / float(np.sum((ref - got) ** 2)))


def test_every_quantized_layer_is_reported_with_a_real_module(int8_report, zoo_onnx: Path) -> None:
    _, report = int8_report
    layers = report["layers"]
    assert len(layers) == report["units"] == 28 and report["layers_images"] == 64
    assert report["layers_sample"] == "the first 64 images of fashion-mnist:test (--val)"
    modules = {name for name, _ in load_model("zoo:fashion-resnet18").module.named_modules()}
    for layer in layers:
        assert set(layer) >= {"node", "module", "kind", "sqnr_db", "fallback"}
        assert layer["module"] in modules, layer
        assert layer["kind"] in ("conv", "residual") and layer["fallback"] is False
    assert {x["module"] for x in layers if x["kind"] == "residual"} == {f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)}
    assert "layer2.0.downsample.0" in {x["module"] for x in layers}


@pytest.mark.parametrize("fixture", ["int8_report", "int8_cpu_report"])
def test_worst_and_best_sqnr_agree_with_an_independent_computation(fixture: str, zoo_onnx: Path, request) -> None:
    """Both targets. The cpu one is the trap: ONNX Runtime's quantizer gives the Conv the removed
    ReLU's tensor name, and the float tensor under it is the pre-activation (about 0 dB against
    the FP32 ReLU output); the ReLU's output is the DequantizeLinear after it."""
    int8, report = request.getfixturevalue(fixture)
    layers = sorted(report["layers"], key=lambda x: x["sqnr_db"])
    for layer in (layers[0], layers[-1]):
        independent = _independent_sqnr(zoo_onnx, int8, layer["tensor"], report["layers_images"])
        assert abs(independent - layer["sqnr_db"]) < 1.0, (layer, independent)
    assert 10 < layers[0]["sqnr_db"] < layers[-1]["sqnr_db"] < 80, (layers[0], layers[-1])


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_report_on_held_out_calibration_images_agrees_with_an_independent_computation(
        target: str, zoo_onnx: Path, tmp_path: Path) -> None:
    """Without --val the report is computed on the held-out calibration images, with the FP32 side
    kept from the calibration pass: it must equal a from-scratch computation on those images."""
    from resdeploy.data import calibration_batches
    from resdeploy.quantize import QuantizeConfig, quantize

    out = tmp_path / "q.onnx"
    quantize(zoo_onnx, out, QuantizeConfig(precision="int8", target=target, calib="fashion-mnist:train", calib_size=128))
    report = json.loads(out.with_name("q.quant.json").read_text())
    n = report["layers_images"]
    assert n == report["calib"]["auto"]["holdout_images"] == 16
    assert report["layers_sample"] == "16 calibration images of fashion-mnist:train held out from the threshold fit"
    x = np.concatenate([b["input"] for b in calibration_batches(load_dataset("fashion-mnist:train"), FASHION_PREPROCESS,
                                                                 input_name="input", size=128)])[-n:]
    layers = sorted(report["layers"], key=lambda x: x["sqnr_db"])
    for layer in (layers[0], layers[len(layers) // 2], layers[-1]):
        outs = []
        for path in (zoo_onnx, out):
            model = onnx.load(str(path))
            name = _consumed(model, layer["tensor"])
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            outs.append(_onnx.session(model).run([name], {"input": x})[0].astype(np.float64))
        ref, got = outs
        independent = 10 * math.log10(float(np.sum(ref ** 2)) / float(np.sum((ref - got) ** 2)))
        assert abs(independent - layer["sqnr_db"]) < 0.5, (layer, independent)


def test_quantize_prints_the_three_worst_layers(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    r = run_cli("quantize", zoo_onnx, "-o", tmp_path / "q.onnx", "--precision", "int8", "--calib",
                "fashion-mnist:train", "--calib-size", "64")
    assert r.code == 0, r.err
    line = next(ln for ln in r.out.splitlines() if "lowest SQNR" in ln)
    assert line.count(" dB") == 3


def _wilson_reference(k: int, n: int) -> tuple[float, float]:
    """Wilson's interval in its textbook form: the roots of (p - k/n)^2 = z^2 p (1 - p) / n."""
    z2 = 1.959963984540054 ** 2
    a, b, c = 1 + z2 / n, -(2 * k / n + z2 / n), (k / n) ** 2
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


def _mcnemar_reference(b: int, c: int) -> float:
    """Exact two-sided McNemar with exact rational arithmetic."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(Fraction(math.comb(n, i), 2 ** n) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), 2 * tail))


@pytest.mark.parametrize("k, n", [(9069, 10000), (0, 50), (50, 50), (3, 7), (499, 500)])
def test_wilson_interval(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    rlo, rhi = _wilson_reference(k, n)
    assert abs(lo - rlo) < 1e-12 and abs(hi - rhi) < 1e-12


@pytest.mark.parametrize("b, c", [(21, 22), (15, 15), (40, 12), (0, 7), (0, 0), (300, 250), (1, 0)])
def test_exact_mcnemar(b: int, c: int) -> None:
    assert abs(mcnemar_exact(b, c) - _mcnemar_reference(b, c)) < 1e-12


def test_eval_json_intervals_and_p_values_match_per_image_predictions(zoo_onnx: Path, int8_report, tmp_path: Path,
                                                                      run_cli) -> None:
    int8, _ = int8_report
    out = tmp_path / "e.json"
    assert run_cli("eval", int8, "--data", "fashion-mnist:test", "--limit", "3000", "--json", out).code == 0
    data = json.loads(out.read_text())
    (res,) = data["results"]
    labels = load_dataset("fashion-mnist:test").labels[:3000]
    x = load_dataset("fashion-mnist:test").take(np.arange(3000), FASHION_PREPROCESS)
    pred = _onnx.session(int8).run(None, {"input": x})[0].argmax(1)
    import torch

    with torch.no_grad():
        ref = load_model("zoo:fashion-resnet18").module(torch.from_numpy(x)).numpy().argmax(1)
    k = int(np.sum(pred == labels))
    assert res["top1"] == k / 3000
    assert np.allclose(res["top1_ci95"], _wilson_reference(k, 3000), atol=1e-12)
    b = int(np.sum((ref == labels) & (pred != labels)))
    c = int(np.sum((ref != labels) & (pred == labels)))
    assert abs(res["drop_p_value"] - _mcnemar_reference(b, c)) < 1e-12
    assert np.allclose(data["reference"]["top1_ci95"], _wilson_reference(int(np.sum(ref == labels)), 3000), atol=1e-12)
    assert paired_drop(ref == labels, pred == labels).p_value == res["drop_p_value"]
