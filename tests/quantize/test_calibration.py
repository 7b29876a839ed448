"""One calibration pass for every method, `auto`, fallback sets up to every layer on both targets,
and the budget loop's rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from resdeploy import _onnx
from resdeploy.data import calibration_batches, load_dataset
from resdeploy.quantize import QuantizeConfig, _calib, _qdq
from resdeploy.quantize._cpu import activation_tensors, quantize_cpu, with_ranges
from resdeploy.quantize._sqnr import layer_sqnr
from resdeploy.zoo import FASHION_PREPROCESS

from ..conftest import assert_clean_error


@pytest.fixture(scope="module")
def setup(zoo_onnx: Path):
    model = _onnx.load(zoo_onnx)
    _qdq.name_nodes(model)
    batches = calibration_batches(load_dataset("fashion-mnist:train"), FASHION_PREPROCESS, input_name="input",
                                  size=96, batch_size=32)
    stats = _calib.collect(model, activation_tensors(model), batches, holdout=_calib.holdout_size(96, 32 * 32))
    return model, batches, stats


def test_statistics_split_and_merge_exactly(setup) -> None:
    model, batches, stats = setup
    assert stats.images == 96 and stats.holdout_images == 12
    assert sum(len(o) for o in stats.holdout_outputs) == 12
    whole = _calib.collect(model, list(stats.fit), batches)  # no hold-out: one set of statistics
    merged = stats.all()
    for name in list(merged)[:20]:
        a, b = merged[name], whole.fit[name]
        assert a.absmax == b.absmax and a.minval == b.minval
        assert a.edge == pytest.approx(b.edge) and np.array_equal(a.hist, b.hist), name
    for method in _calib.METHODS:  # every method's thresholds from the same statistics
        t = _calib.thresholds(merged, method)
        assert all(0 < v <= merged[n].absmax + 1e-12 for n, v in t.items())


def test_cpu_ranges_patched_in_match_the_quantizer_s_own(setup) -> None:
    """What `auto` scores for the cpu target: one quantizer output with another method's ranges
    patched in (activation scales and zero points, int32 biases requantized) is the quantizer's
    own output for those ranges, to rounding."""
    model, batches, stats = setup
    st = stats.all()
    direct = quantize_cpu(model, batches[0], _calib.ranges(st, "entropy"))
    patched = with_ranges(quantize_cpu(model, batches[0], _calib.ranges(st, "minmax")), _calib.ranges(st, "entropy"),
                          model)
    a = {t.name: onnx.numpy_helper.to_array(t) for t in direct.graph.initializer}
    b = {t.name: onnx.numpy_helper.to_array(t) for t in patched.graph.initializer}
    assert a.keys() == b.keys()
    for n in a:
        if a[n].dtype == np.int32:  # biases: within one step
            assert np.abs(a[n].astype(np.int64) - b[n]).max() <= 1, n
        elif a[n].dtype == np.uint8:
            assert np.abs(a[n].astype(np.int64) - b[n]).max() <= 1, n
        else:
            assert np.allclose(a[n], b[n], rtol=1e-5, atol=0), (n, a[n], b[n])
    x = batches[-1]["input"]
    ref, ya, yb = (_onnx.session(m).run(None, {"input": x})[0] for m in (model, direct, patched))
    assert np.abs(ya - yb).max() <= 0.25 * np.abs(ya - ref).max()  # rounding, far under the INT8 error
    minmax = quantize_cpu(model, batches[0], _calib.ranges(st, "minmax"))
    assert any(not np.array_equal(a[t.name], onnx.numpy_helper.to_array(t)) for t in minmax.graph.initializer
               if t.name.endswith("_scale")), "the test needs ranges that differ"


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
@pytest.mark.parametrize("kept", ["none", "first conv only", "all but the first conv"])
def test_every_fallback_set_yields_a_valid_model(setup, target: str, kept: str) -> None:
    """The issue's crash: every layer but a few given back, the first convolution in the FP16
    remainder; the model must run and its per-layer report must be computable."""
    model, batches, stats = setup
    units = _qdq.find_units(model)
    first = units[0]
    keep = {"none": [], "first conv only": [first], "all but the first conv": units[1:]}[kept]
    excluded = [u.node for u in units if u not in keep]
    st = stats.all()
    if target == "tensorrt":
        q = _qdq.write_qdq(model, keep, _calib.thresholds(st, "mse"), fp16_remainder=True)
    else:
        q = quantize_cpu(model, batches[0], _calib.ranges(st, "mse"), excluded)
    x = batches[0]["input"][:8]
    ref = _onnx.session(model).run(None, {"input": x})[0]
    got = _onnx.session(q).run(None, {"input": x})[0]
    assert got.shape == ref.shape and np.isfinite(got).all()
    layers = layer_sqnr(model, q, units, [x], excluded)
    assert len(layers) == len(units)
    assert {x["node"] for x in layers if x["fallback"]} == set(excluded)
    if kept == "none" and target == "tensorrt":  # everything FP16: close to FP32 at every layer
        assert min(x["sqnr_db"] for x in layers) > 40, min(layers, key=lambda x: x["sqnr_db"])
        assert (got.argmax(1) == ref.argmax(1)).all()


def test_auto_is_the_default_and_reports_its_choice(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    assert QuantizeConfig(calib="fashion-mnist:train").calib_method == "auto"
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--calib", "fashion-mnist:train",
                "--calib-size", "128")
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "q.quant.json").read_text())
    auto = report["calib"]["auto"]
    assert set(auto["scores"]) == set(_calib.METHODS) and auto["holdout_images"] == 16
    best = max(auto["scores"].values(), key=lambda s: s["logit_sqnr_db"])
    assert auto["scores"][auto["chosen"]] == best and report["calib"]["chosen"] == auto["chosen"]
    assert f"auto chose {auto['chosen']}" in r.out
    assert report["layers_images"] == 16 and "held out" in report["layers_sample"]
    assert "held out" in next(ln for ln in r.out.splitlines() if "lowest SQNR" in ln)


def test_budget_that_cannot_be_shown_is_one_clean_error(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    """A zero budget can never be shown on finite data: exit 1, one error line saying what was
    tried, nothing written."""
    out = tmp_path / "b.onnx"
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "int8", "--calib", "fashion-mnist:train",
                "--calib-size", "64", "--val", "fashion-mnist:test", "--val-limit", "300", "--max-drop", "0")
    assert_clean_error(r, 1, "could not show", "tried 0, 1, 2, 4, 8, 16, 28 of 28", "95% interval")
    assert not out.exists() and not (tmp_path / "b.quant.json").exists()


def test_budget_error_says_how_many_images_would_show_it(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    r = run_cli("quantize", zoo_onnx, "-o", tmp_path / "b.onnx", "--precision", "int8", "--calib",
                "fashion-mnist:train", "--calib-size", "64", "--val", "fashion-mnist:test", "--val-limit", "300",
                "--max-drop", "0.5")
    assert_clean_error(r, 1, "validation images")
