"""quantize on the demo model: Q/DQ structure TensorRT needs, accuracy on all 10,000 test
images, the accuracy budget, determinism, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from resdeploy.measure import evaluate
from resdeploy.runtime import Artifact

from ..conftest import assert_clean_error


@pytest.fixture(scope="module")
def fp32_eval(zoo_onnx: Path):
    return evaluate([Artifact.resolve(str(zoo_onnx))], "fashion-mnist:test").results[0]


def _eval(path: Path):
    return evaluate([Artifact.resolve(str(path))], "fashion-mnist:test").results[0]


@pytest.fixture(scope="module")
def int8_trt(zoo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resdeploy.quantize import QuantizeConfig, quantize

    out = tmp_path_factory.mktemp("q") / "int8_trt.onnx"
    quantize(zoo_onnx, out, QuantizeConfig(precision="int8", target="tensorrt", calib="fashion-mnist:train", calib_size=512))
    return out


def test_fp16_keeps_io_fp32_and_accuracy(zoo_onnx: Path, tmp_path: Path, run_cli, fp32_eval) -> None:
    out = tmp_path / "fp16.onnx"
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "fp16")
    assert r.code == 0, r.err
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert all(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer if t.name in conv_weights)
    res = _eval(out)
    assert res.precision == "fp16"
    assert 100 * (fp32_eval.top1 - res.top1) <= 0.05
    assert res.agreement_top1 >= 0.999


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def test_int8_tensorrt_structure(int8_trt: Path) -> None:
    model = onnx.load(str(int8_trt))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    inits = {t.name: t for t in model.graph.initializer}
    prod = _producers(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        assert len(n.input) == 3, f"{n.name}: a zero-point must be given (else opset 17 means uint8)"
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8, n.name
        assert not numpy_helper.to_array(zp).any(), n.name
    assert not any(t.data_type == TensorProto.INT32 for t in model.graph.initializer), "no int32 bias quantization"
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 20
    for conv in convs:
        dq = prod[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        assert {a.name: a.i for a in dq.attribute}.get("axis") == 0
        q = prod[dq.input[0]]
        assert q.op_type == "QuantizeLinear" and q.input[0] in inits, "weights stay float initialisers"
        w = inits[q.input[0]]
        assert w.data_type == TensorProto.FLOAT
        assert numpy_helper.to_array(inits[dq.input[1]]).shape == (w.dims[0],), "per-channel scales"
        if len(conv.input) > 2:
            assert inits[conv.input[2]].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16), "bias stays float"
        # The activation input comes through a DequantizeLinear (possibly via a Cast to FP16).
        src = prod[conv.input[0]]
        src = prod[src.input[0]] if src.op_type == "Cast" else src
        assert src.op_type == "DequantizeLinear"
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 8
    for add in adds:
        feeders = [prod.get(i) for i in add.input]
        feeders = [prod.get(f.input[0]) if f is not None and f.op_type == "Cast" else f for f in feeders]
        assert any(f is not None and f.op_type == "DequantizeLinear" for f in feeders), add.name
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["resdeploy.precision"] == "int8" and meta["resdeploy.target"] == "tensorrt"


def test_int8_tensorrt_accuracy(int8_trt: Path, fp32_eval) -> None:
    res = _eval(int8_trt)
    assert res.n == 10_000
    assert 100 * (fp32_eval.top1 - res.top1) <= 0.2
    assert res.agreement_top1 >= 0.985


def test_int8_budget_with_fallback(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    # Deliberately wrong calibration (real images at half contrast: every range too small, about
    # 2 pp lost on any stack) and a budget the first round cannot show, so layers must fall back.
    from resdeploy.data import load_dataset
    from resdeploy.runtime import Artifact

    train = load_dataset("fashion-mnist:train")
    x = train.take(np.arange(64), Artifact.resolve(str(zoo_onnx)).preprocess())
    np.savez(tmp_path / "dim.npz", x=(0.5 * x).astype(np.float32), y=train.labels[:64])
    out = tmp_path / "b.onnx"
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--calib", tmp_path / "dim.npz",
                "--calib-size", "64", "--calib-method", "minmax", "--val", "fashion-mnist:test", "--max-drop", "0.5",
                "--val-limit", "2000", "--fp32-remainder")
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "b.quant.json").read_text())
    budget = report["budget"]
    history = budget["history"]
    assert budget["drop_ci95_pp"][1] <= 0.5 and budget["shown_within_budget"]
    assert history[0]["drop_ci95_pp"][1] > 0.5, "the test needs a first attempt over budget"
    assert report["fallback"], "layers must have fallen back"
    assert len(report["fallback"]) == history[-1]["fallback"]
    last = history[-1]
    assert all(budget[k] == last[k] for k in ("top1", "drop_pp", "agreement", "drop_ci95_pp"))
    assert "95% interval" in r.out
    model = onnx.load(str(out))
    fallen = set(report["fallback"])
    prod = _producers(model)
    for conv in (n for n in model.graph.node if n.name in fallen and n.op_type == "Conv"):
        assert prod.get(conv.input[1]) is None, f"{conv.name} fell back: its weights are not quantized"


def test_int8_budget_met_on_all_test_images(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "b.onnx"
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--calib", "fashion-mnist:train",
                "--val", "fashion-mnist:test", "--max-drop", "0.1")
    assert r.code == 0, r.err
    budget = json.loads((tmp_path / "b.quant.json").read_text())["budget"]
    assert budget["n"] == 10_000 and budget["drop_pp"] <= 0.1 and budget["drop_ci95_pp"][1] <= 0.1
    res = _eval(out)
    assert abs(res.top1 - budget["top1"]) < 1e-9


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_determinism(zoo_onnx: Path, tmp_path: Path, run_cli, target: str) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--target", target,
                    "--calib", "fashion-mnist:train", "--calib-size", "128")
        assert r.code == 0, r.err
    assert a.read_bytes() == b.read_bytes()


def test_cpu_target_is_u8_activations(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "cpu.onnx"
    assert run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--target", "cpu",
                   "--calib", "fashion-mnist:train", "--calib-size", "128").code == 0
    model = onnx.load(str(out))
    inits = {t.name: t for t in model.graph.initializer}
    act_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert act_q and all(inits[n.input[2]].data_type == TensorProto.UINT8 for n in act_q)
    res = _eval(out)
    assert res.agreement_top1 >= 0.98


# --- bad input -----------------------------------------------------------------------------


def test_int8_without_calib(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "x.onnx"
    assert_clean_error(run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8"), 2, "--calib")
    assert not out.exists()


def test_calibration_data_of_wrong_shape(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    npz, out = tmp_path / "grey.npz", tmp_path / "x.onnx"
    np.savez(npz, x=np.zeros((16, 1, 32, 32), np.float32), y=np.zeros(16, np.int64))
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--calib", npz)
    assert_clean_error(r, 2, "shape")
    assert not out.exists()


def test_empty_calibration_data(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    npz, out = tmp_path / "empty.npz", tmp_path / "x.onnx"
    np.savez(npz, x=np.zeros((0, 3, 32, 32), np.float32), y=np.zeros(0, np.int64))
    assert_clean_error(run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--calib", npz), 2, "empty")
    assert not out.exists()


def test_already_quantized(int8_trt: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "x.onnx"
    r = run_cli("quantize", int8_trt, "-o", out, "--precision", "int8", "--calib", "fashion-mnist:train")
    assert_clean_error(r, 2, "already quantized")
    assert not out.exists()
    assert not (tmp_path / "x.quant.json").exists()
