"""The deploy bundle and `resdeploy verify` on this CPU: every bundled variant passes against its
own expected outputs, a perturbed convolution is caught and named, a tampered bundle or a folder
that is not one is bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ..conftest import assert_clean_error


@pytest.fixture
def bundle(demo_run, tmp_path: Path) -> Path:
    out = demo_run[0]
    dest = tmp_path / "bundle"
    shutil.copytree(out / "bundle", dest)
    return dest


def test_bundle_is_small_and_complete(demo_run) -> None:
    out = demo_run[0]
    b = out / "bundle"
    doc = json.loads((b / "bundle.json").read_text())
    assert doc["format"] == "resdeploy-bundle" and doc["format_version"] == 1
    assert {v["name"] for v in doc["variants"]} == {"fp32", "fp16", "int8-cpu", "int8-tensorrt"}
    for v in doc["variants"]:
        assert (b / v["file"]).is_file() and set(v["tolerance"]) == {"min_agreement", "max_abs_err", "layer_rel_err"}
        assert 0.0 < v["workstation"]["top1"] <= 1.0
    golden = np.load(b / "golden.npz")
    assert golden["x"].shape == (256, 3, 32, 32) and golden["x"].dtype == np.uint8
    assert np.bincount(golden["y"], minlength=10).tolist() == [26] * 6 + [25] * 4, "class-balanced"
    expected = np.load(b / "expected.npz")
    assert set(expected.files) == {"reference", "fp32", "fp16", "int8-cpu", "int8-tensorrt"}
    for p in b.iterdir():
        if p.suffix != ".onnx":
            assert p.stat().st_size < 3_000_000, p
    assert "trtexec" in (b / "trtexec.sh").read_text()


def test_verify_passes_every_bundled_variant(bundle: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "v.json"
    r = run_cli("verify", bundle, "--json", out)
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    assert {"results", "bundle", "env"} <= set(data)
    assert {x["variant"] for x in data["results"]} == {"fp32", "fp16", "int8-cpu", "int8-tensorrt"}
    for x in data["results"]:
        assert set(x) >= {"artifact", "variant", "backend", "n", "agreement_expected", "agreement_reference", "top1",
                          "max_abs_err_expected", "passed", "first_divergent"}
        assert x["passed"] and x["first_divergent"] is None and x["n"] == 256
        if x["backend"] == "ort-cpu":  # the runtime the expected outputs came from
            assert x["agreement_expected"] == 1.0 and x["max_abs_err_expected"] == 0.0
        else:  # OpenVINO's kernels: within the variant's tolerance
            assert x["agreement_expected"] >= x["tolerance"]["min_agreement"]


def _perturb_conv(src: Path, dest: Path, scope: str) -> str:
    model = onnx.load(str(src))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and scope in n.name)
    producers = {o: n for n in model.graph.node for o in n.output}
    weight = producers[producers[conv.input[1]].input[0]].input[0]  # float weight -> Q -> DQ -> Conv
    for t in model.graph.initializer:
        if t.name == weight:
            w = numpy_helper.to_array(t)
            noisy = w + np.random.default_rng(0).normal(0, 2 * np.abs(w).std(), w.shape).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), weight))
    onnx.save(model, str(dest))
    return conv.name


def test_a_perturbed_convolution_is_named(bundle: Path, tmp_path: Path, run_cli) -> None:
    src = next(bundle.glob("*-int8-tensorrt.onnx"))
    node = _perturb_conv(src, tmp_path / "bad.onnx", "layer3/layer3.0/conv2")
    out = tmp_path / "v.json"
    r = run_cli("verify", bundle, tmp_path / "bad.onnx", "--variant", "int8-tensorrt", "--json", out)
    assert r.code == 1, r.err
    (res,) = json.loads(out.read_text())["results"]
    assert not res["passed"]
    div = res["first_divergent"]
    assert div["node"] == node and div["module"] == "layer3.0.conv2" and div["rel_err"] > div["tolerance"]
    assert "layer3.0.conv2" in r.out


def test_candidate_identical_to_a_variant_is_matched_by_sha256(bundle: Path, tmp_path: Path, run_cli) -> None:
    copy = tmp_path / "mine.onnx"
    shutil.copyfile(next(bundle.glob("*-fp16.onnx")), copy)
    out = tmp_path / "v.json"
    assert run_cli("verify", bundle, copy, "--json", out).code == 0
    assert [x["variant"] for x in json.loads(out.read_text())["results"]] == ["fp16"]


def test_tampered_bundles_and_other_folders_are_bad_input(bundle: Path, tmp_path: Path, run_cli) -> None:
    assert_clean_error(run_cli("verify", tmp_path), 2, "not a resdeploy bundle")
    assert_clean_error(run_cli("verify", bundle, "--variant", "int4"), 2, "no variant 'int4'")
    unknown = tmp_path / "other.onnx"
    _perturb_conv(next(bundle.glob("*-int8-tensorrt.onnx")), unknown, "layer1/layer1.0/conv1")
    assert_clean_error(run_cli("verify", bundle, unknown), 2, "--variant")
    golden = bundle / "golden.npz"
    golden.write_bytes(golden.read_bytes()[:-100])
    assert_clean_error(run_cli("verify", bundle), 2, "golden.npz", "altered")
    doc = json.loads((bundle / "bundle.json").read_text())
    doc["variants"][0]["tolerance"]["min_agreement"] = 0.0
    (bundle / "bundle.json").write_text(json.dumps(doc))
    assert_clean_error(run_cli("verify", bundle), 2, "edited")


def test_bundle_command_rewrites_the_bundle(demo_run, tmp_path: Path, run_cli) -> None:
    r = run_cli("bundle", demo_run[0], "--images", "40", "-o", tmp_path / "small")
    assert r.code == 0, r.err
    assert np.load(tmp_path / "small" / "golden.npz")["x"].shape[0] == 40
    assert run_cli("verify", tmp_path / "small").code == 0
    assert_clean_error(run_cli("bundle", tmp_path), 2, "not a finished `resdeploy run` folder")


# --- a TensorRT plan on the device, against the fake (no TensorRT here) --------------------------

DEVICE = ("Fake Orin", (8, 7))


def _on_fake_device(monkeypatch, version: str, **fake_options):
    import sys

    import resdeploy._tensorrt as probe
    import resdeploy.engine.builder as builder
    import resdeploy.runtime.tensorrt_backend as backend

    from ..engine.fake_tensorrt import CpuOps, make_fake

    trt = make_fake(version, execute_onnx=True, **fake_options)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(probe, "cuda_device", lambda index=0: DEVICE)
    monkeypatch.setattr(backend, "cuda_device", lambda index=0: DEVICE)
    monkeypatch.setattr(builder, "cuda_device", lambda index=0: DEVICE)
    monkeypatch.setattr(backend, "select_device", lambda index: "cpu")
    monkeypatch.setattr(backend, "CudaOps", lambda device: CpuOps(trt, device))
    return trt


def _device_plan(bundle: Path, tmp_path: Path, profile: tuple[int, int, int] = (1, 8, 32)) -> Path:
    from resdeploy.engine import BuildConfig, build_engine

    plan = tmp_path / "device.plan"
    build_engine(next(bundle.glob("*-int8-tensorrt.onnx")), plan, BuildConfig(*profile), device=DEVICE)
    return plan


def test_a_plan_that_computes_the_variant_passes(bundle: Path, tmp_path: Path, monkeypatch, run_cli) -> None:
    _on_fake_device(monkeypatch, "10.13.3.9")
    plan = _device_plan(bundle, tmp_path)
    out = tmp_path / "v.json"
    r = run_cli("verify", bundle, plan, "--json", out)
    assert r.code == 0, r.err
    (res,) = json.loads(out.read_text())["results"]
    assert res["variant"] == "int8-tensorrt" and res["backend"] == "tensorrt", "matched by the plan's source sha256"


def test_a_plan_with_a_narrow_profile_is_fed_batches_it_accepts(bundle: Path, tmp_path: Path, monkeypatch,
                                                                 run_cli) -> None:
    """256 golden images through a plan built for batches 5..6 (the fake refuses any other shape,
    as TensorRT's set_input_shape does): calls of 6, the last short one padded to 5."""
    trt = _on_fake_device(monkeypatch, "10.13.3.9")
    plan = _device_plan(bundle, tmp_path, (5, 6, 6))
    r = run_cli("verify", bundle, plan)
    assert r.code == 0, r.err
    shapes = {c[2][0] for c in trt.calls if c[0] == "context.set_input_shape"}
    assert shapes == {5, 6}, shapes
    r = run_cli("eval", plan, "--data", "fashion-mnist:test", "--limit", "40", "--eval-batch", "250")
    assert r.code == 0, r.err
    r = run_cli("bench", plan, "--batch", "1,6", "--in-process")
    assert_clean_error(r, 2, "runs batches 5 to 6", "--min-batch")


def test_a_faulty_plan_is_traced_to_its_fused_layer_with_debug_tensors(bundle: Path, tmp_path: Path, monkeypatch,
                                                                        run_cli) -> None:
    """The listener gets TensorRT's internal names (``..._myl0``) for the outputs of fused layers,
    INT8 codes among them; verify maps them through the inspector's layer metadata and names the
    fused layer: its ONNX nodes and torch module."""
    trt = _on_fake_device(monkeypatch, "10.13.3.9", faults={"/layer2/layer2.1/conv1/Conv": 3.0})
    plan = _device_plan(bundle, tmp_path)
    out = tmp_path / "v.json"
    r = run_cli("verify", bundle, plan, "--json", out)
    assert r.code == 1, r.err
    (res,) = json.loads(out.read_text())["results"]
    div = res["first_divergent"]
    assert div["module"] == "layer2.1.conv1", res
    assert div["node"] == "/layer2/layer2.1/conv1/Conv" and div["rel_err"] > div["tolerance"]
    # the epilogue kgen layer (bias + ReLU + quantize), not the correlation that holds the pre-bias sum
    assert div["layer"].startswith("__myl_") and div["debug_tensor"].endswith("_myl0")
    assert div["layer_nodes"] == ["/layer2/layer2.1/conv1/Conv", "/layer2/layer2.1/relu/Relu",
                                  "/layer2/layer2.1/relu/Relu_output_0_QuantizeLinear"]
    assert div["layer_modules"] == ["layer2.1.conv1"]
    assert div["tensor"] == "/layer2/layer2.1/relu/Relu_output_0_DequantizeLinear_Output", "INT8 codes dequantized"
    assert "layer2.1.conv1" in r.out and res["hint"] is None
    assert f"first divergent fused layer {div['layer']} = /layer2/layer2.1/conv1/Conv + /layer2/layer2.1/relu/Relu" in r.out
    built = [c[1] for c in trt.calls if c[0] == "builder.build_serialized_network"]
    assert built[-1]["debug"] is True, "a debug engine was built from the bundled ONNX"
    assert built[-1]["profiling_verbosity"] == "DETAILED", "so that the inspector names each layer's ONNX nodes"
    assert ("context.set_debug_listener",) in trt.calls and ("engine.create_engine_inspector",) in trt.calls


def test_a_plan_whose_debug_tensors_cannot_be_mapped_gets_the_polygraphy_command(bundle: Path, tmp_path: Path,
                                                                                monkeypatch, run_cli) -> None:
    """An inspector that names layers only (no metadata): the internal names match no ONNX
    tensor. One line says so, then the Polygraphy command; never "largest relative error 0"."""
    _on_fake_device(monkeypatch, "10.13.3.9", faults={"/layer2/layer2.1/conv1/Conv": 3.0}, layer_information=False)
    plan = _device_plan(bundle, tmp_path)
    out = tmp_path / "v.json"
    r = run_cli("verify", bundle, plan, "--json", out)
    assert r.code == 1, r.err
    (res,) = json.loads(out.read_text())["results"]
    assert res["first_divergent"] is None
    assert "polygraphy run" in res["hint"] and "polygraphy run" in r.out
    assert res["note"].startswith("only 0 of the ") and "no layer metadata" in res["note"]
    said = [line for line in r.err.splitlines() if "could be matched to ONNX tensors" in line]
    assert len(said) == 1, r.err
    assert "relative error 0" not in r.out + r.err and "at ''" not in r.out + r.err


def _tiny_int8(path: Path, per_channel_second: bool) -> None:
    """input -> Q/DQ -> Conv -> Relu -> Q/DQ -> Conv -> Relu -> Q/DQ (per-channel scale if asked) -> GAP."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.float32(0.02), "s_in"), numpy_helper.from_array(np.float32(0.05), "s1"),
            numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32) if per_channel_second
                                    else np.float32(0.1), "s2"),
            numpy_helper.from_array(np.int8(0), "z"),
            numpy_helper.from_array(np.zeros(4, np.int8) if per_channel_second else np.int8(0), "z2")]
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["input", "s_in", "z"], ["q0"], name="input_QuantizeLinear"),
             n("DequantizeLinear", ["q0", "s_in", "z"], ["dq0"], name="input_DequantizeLinear"),
             n("Conv", ["dq0", "w1", "b1"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
             n("Relu", ["c1"], ["r1"], name="/relu/Relu"),
             n("QuantizeLinear", ["r1", "s1", "z"], ["q1"], name="/relu/Relu_output_0_QuantizeLinear"),
             n("DequantizeLinear", ["q1", "s1", "z"], ["dq1"], name="/relu/Relu_output_0_DequantizeLinear"),
             n("Conv", ["dq1", "w2"], ["c2"], name="/layer1/conv/Conv", pads=[1, 1, 1, 1]),
             n("Relu", ["c2"], ["r2"], name="/layer1/relu/Relu"),
             n("QuantizeLinear", ["r2", "s2", "z2"], ["q2"], name="/layer1/relu/Relu_output_0_QuantizeLinear", axis=1),
             n("DequantizeLinear", ["q2", "s2", "z2"], ["dq2"], name="/layer1/relu/Relu_output_0_DequantizeLinear",
               axis=1),
             n("GlobalAveragePool", ["dq2"], ["g"], name="/avgpool/GlobalAveragePool"),
             n("Flatten", ["g"], ["logits"], name="/Flatten")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_debug_tensors_are_dequantized_with_their_scale_or_left_out(tmp_path: Path, per_channel: bool) -> None:
    """INT8 codes are never compared with float activations as if they were values: with a
    per-tensor scale they are dequantized (and then match exactly); without one they are left
    out, and the note says so."""
    from resdeploy import _onnx
    from resdeploy.device.explain import _activations, compare_debug_tensors, engine_layers, map_debug_tensors

    from ..engine.fake_tensorrt import _onnx_activations, fused_layers, inspector_json

    path = tmp_path / "tiny.onnx"
    _tiny_int8(path, per_channel)
    model = _onnx.load(path)
    fused = fused_layers(str(path))
    layers = engine_layers(inspector_json(fused, detailed=True))
    boundaries, unscaled = map_debug_tensors(model, layers)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _, acts = _onnx_activations(str(path), x, {})
    got = {la["output"]: acts[la["onnx"]].astype(np.int8 if la["int8"] else np.float32) for la in fused}
    want = {n: acts[n] for n in _activations(model)}
    int8 = {b.debug_tensor: b for b in boundaries if b.scale is not None}
    assert "q1.1_18_myl0" in int8, boundaries
    assert int8["q1.1_18_myl0"].scale == pytest.approx(0.05)
    assert int8["q1.1_18_myl0"].onnx_tensor == "dq1"
    assert not any(b.layer == 1 for b in boundaries), "the correlation holds a pre-bias sum: never compared"
    found, note, compared = compare_debug_tensors(model, layers, got, want, 1e-6, boundaries, unscaled)
    assert found is None and compared >= 2
    if per_channel:
        assert unscaled == ["q2.1_20_myl0"]
        assert note is not None and note.startswith("1 INT8 debug tensor(s) left out")
    else:
        assert unscaled == [] and note is None and "q2.1_20_myl0" in int8
    # the raw codes, compared as values, would have looked like a divergence
    raw = [type(b)(b.debug_tensor, b.onnx_tensor, b.layer, 1.0) for b in boundaries if b.scale is not None]
    assert compare_debug_tensors(model, layers, got, want, 0.05, raw, [])[0] is not None


def test_before_10_12_a_faulty_plan_gets_the_polygraphy_command(bundle: Path, tmp_path: Path, monkeypatch,
                                                                 run_cli) -> None:
    _on_fake_device(monkeypatch, "10.3.0.30", faults={"/layer2/layer2.1/conv1/Conv": 3.0})
    plan = _device_plan(bundle, tmp_path)
    out = tmp_path / "v.json"
    r = run_cli("verify", bundle, plan, "--json", out)
    assert r.code == 1, r.err
    (res,) = json.loads(out.read_text())["results"]
    assert res["first_divergent"] is None
    assert "polygraphy run" in res["hint"] and "--strongly-typed" in res["hint"] and "polygraphy_data.py" in res["hint"]
    assert "polygraphy run" in r.out
