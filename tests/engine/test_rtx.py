"""TensorRT-RTX: NVIDIA's own parser and builder (ahead of time, no GPU needed) on every variant
of the demo model and of a ResNet-50 at 224 px; the parity of the fake's parser with NVIDIA's on
one catalogue of ONNX files; resdeploy's own check that refuses what a parser would, with or
without NVIDIA's libraries; the CLI's build and --print-trtexec for this family."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from resdeploy._io import sha256_file
from resdeploy.engine import BuildConfig, build_engine, check_readable, load_record
from resdeploy.errors import UsageError

from ..conftest import assert_clean_error
from .fake_tensorrt import make_fake
from .qdq_catalogue import KINDS, write_all

TRT_VARIANTS = ("fp32", "fp16", "int8-tensorrt")


def test_nvidia_builds_every_tensorrt_variant_of_the_demo(rtx, demo_variants, tmp_path) -> None:
    sizes = {}
    for name in TRT_VARIANTS:
        onnx_path = demo_variants[name]
        r = build_engine(onnx_path, tmp_path / f"{name}.engine", runtime="tensorrt-rtx")
        rec = json.loads((tmp_path / f"{name}.engine.json").read_text())
        assert rec == r.record
        assert rec["builder"] == {"family": "tensorrt-rtx", "name": "TensorRT-RTX", "version": rtx.__version__,
                                  "module": "tensorrt_rtx"}
        assert rec["compute_capabilities_targeted"] == "default" and rec["gpu"] is None
        assert rec["precision"] == name.split("-")[0] and "tensorrt_version" not in rec
        assert rec["source_onnx"]["sha256"] == sha256_file(onnx_path)
        assert rec["recipe"]["generation"] == "rtx" and rec["recipe"]["strongly_typed"] is True
        assert rec["recipe"]["cleared_flags"] == (["TF32"] if name == "fp32" else [])
        sizes[name] = r.plan.stat().st_size
    # weights in the engine: FP16 about half of FP32, INT8 smaller still (FP32 weights are 44.7 MB)
    assert 40e6 < sizes["fp32"] < 50e6
    assert 0.4 < sizes["fp16"] / sizes["fp32"] < 0.6 and sizes["int8-tensorrt"] < sizes["fp16"]


def test_nvidia_builds_resnet50_at_224(resnet50_engines) -> None:
    assert set(resnet50_engines) == set(TRT_VARIANTS)
    sizes = {k: r.plan.stat().st_size for k, r in resnet50_engines.items()}
    assert 95e6 < sizes["fp32"] < 115e6, sizes  # 25.6 M parameters in FP32
    assert sizes["int8-tensorrt"] < sizes["fp16"] < sizes["fp32"]
    for name, r in resnet50_engines.items():
        assert r.record["profile"] == {"input": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [4, 3, 224, 224]}}
        assert r.record["precision"] == name.split("-")[0] and r.record["builder"]["family"] == "tensorrt-rtx"


def test_named_compute_capabilities_are_built_and_recorded(rtx, demo_variants, tmp_path) -> None:
    r = build_engine(demo_variants["fp16"], tmp_path / "t.engine", BuildConfig(compute_capabilities=("7.5", "12.0")),
                     runtime="tensorrt-rtx")
    assert r.record["compute_capabilities_targeted"] == ["7.5", "12.0"]
    with pytest.raises(UsageError, match="not a TensorRT-RTX target"):
        BuildConfig(compute_capabilities=("9.0",))
    with pytest.raises(UsageError, match="only target"):
        BuildConfig(compute_capabilities=("current", "8.6"))


# --- the fake agrees with NVIDIA ----------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(demo_variants, tmp_path_factory) -> dict[str, Path]:
    """Every variant `run` makes, the cpu profile, and one file per Q/DQ form a parser may refuse."""
    return {**{f"demo-{k}": v for k, v in demo_variants.items()}, **write_all(tmp_path_factory.mktemp("cat"))}


def _accepts(trt: Any, path: Path) -> tuple[bool, str]:
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR) if hasattr(trt, "Logger") else trt.ILogger()
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse_from_file(str(path)))
    return ok, "" if ok else str(parser.get_error(0).desc()).splitlines()[-1]


def test_fake_parser_agrees_with_nvidias(rtx, catalogue) -> None:
    fake = make_fake("1.7.1.116", builder="tensorrt-rtx")
    verdicts = {}
    for name, path in catalogue.items():
        real, why = _accepts(rtx, path)
        verdicts[name] = real
        assert _accepts(fake, path)[0] == real, (name, why)
        # resdeploy's own check refuses exactly what NVIDIA's parser refuses
        try:
            check_readable(onnx.load(path), path, "tensorrt-rtx", "rtx")
            ours = True
        except UsageError:
            ours = False
        assert ours == real, (name, why)
    assert verdicts == {"demo-fp32": True, "demo-fp16": True, "demo-int8-tensorrt": True, "demo-int8-cpu": False,
                        "symmetric-int8": True, "non-zero-zero-point": False, "uint8-zero-point": True,
                        "no-zero-point": True, "int32-bias": False, "int8-initialiser": True, "qlinearconv": False}
    assert set(KINDS) <= set(verdicts)


@pytest.mark.parametrize("kind, generation, refused", [
    ("int8-initialiser", "8.6", True), ("int8-initialiser", "10", False),
    ("uint8-zero-point", "10", True), ("no-zero-point", "11", True), ("symmetric-int8", "8.6", False),
])
def test_tensorrt_generations_refuse_what_their_parsers_do(tmp_path, kind, generation, refused) -> None:
    """TensorRT (not -RTX) rules, from TENSORRT.md: the fake's parser and resdeploy's check agree."""
    path = write_all(tmp_path)[kind]
    fake = make_fake({"8.6": "8.6.1.6", "10": "10.3.0.30", "11": "11.4.1"}[generation])
    assert _accepts(fake, path)[0] is not refused
    if refused:
        with pytest.raises(UsageError, match=r"input_QuantizeLinear|w_DequantizeLinear"):
            check_readable(onnx.load(path), path, "tensorrt", generation)
    else:
        check_readable(onnx.load(path), path, "tensorrt", generation)


# --- the layer metadata verify maps debug tensors by, as NVIDIA's parser and builder write it ----

_BUILD_DETAILED = """
import json, sys
import tensorrt_rtx as trt

class Capture(trt.ILogger):
    def __init__(self):
        trt.ILogger.__init__(self)
        self.layers, self.fused = "", []
    def log(self, severity, msg):
        if msg.startswith("Layers:"):
            self.layers = msg
        elif " metadata: " in msg:
            self.fused.append(msg)

logger = Capture()
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(sys.argv[1])
parsed = {network.get_layer(i).name: network.get_layer(i).metadata for i in range(network.num_layers)}
network.mark_unfused_tensors_as_debug_tensors()
config = builder.create_builder_config()
config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
profile = builder.create_optimization_profile()
profile.set_shape("input", (1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))
config.add_optimization_profile(profile)
assert builder.build_serialized_network(network, config) is not None
print(json.dumps({"parsed": parsed, "layers": logger.layers, "fused": logger.fused}))
"""


def _layers_from_build_log(text: str) -> list[dict[str, Any]]:
    """The builder's DETAILED "Layers:" dump as the inspector's JSON layers (Name, LayerType,
    Outputs with Name/Dimensions/Datatype, Metadata)."""
    import re

    layers = []
    for line in text.splitlines()[1:]:
        head = re.match(r"Name: (.*?), LayerType: (\w+), ", line)
        if head is None:
            continue
        outs = line[line.index("Outputs: [") : line.index("], TacticName:")]
        outputs = [{"Name": n, "Dimensions": [int(d) for d in dims.split(",") if d], "Datatype": dt}
                   for n, dims, dt in re.findall(r"\{ Name: (.*?), Dimensions: \[([-\d,]*)\].*?Datatype: (\w+)", outs)]
        layers.append({"Name": head.group(1), "LayerType": head.group(2), "Outputs": outputs,
                       "Metadata": line.split(", Metadata: ", 1)[1] if ", Metadata: " in line else ""})
    return layers


def test_the_layer_metadata_verify_reads_is_what_nvidias_builder_writes(rtx, demo_variants) -> None:
    """On the demo's INT8 ResNet-18, NVIDIA's parser sets each layer's metadata to
    ``[ONNX Layer: NODE]``; its builder (debug tensors marked, ProfilingVerbosity.DETAILED) joins
    the ONNX nodes of what it fuses; verify's reader finds every computing ONNX node there, and
    the debug tensors it maps land on ONNX tensors of the engine tensor's own shape: INT8 codes on
    a DequantizeLinear output with its per-tensor scale, never a convolution's partial sum."""
    import subprocess

    from resdeploy.device.explain import engine_layers, map_debug_tensors

    path = demo_variants["int8-tensorrt"]
    out = subprocess.run([sys.executable, "-c", _BUILD_DETAILED, str(path)], capture_output=True, text=True,
                         timeout=600, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    model = onnx.load(path)
    by_name = {n.name: n for n in model.graph.node}
    parsed = {name: meta for name, meta in got["parsed"].items() if name in by_name}
    assert len(parsed) > 50 and all(meta == f"[ONNX Layer: {name}]" for name, meta in parsed.items()), parsed

    raw = _layers_from_build_log(got["layers"])
    layers = engine_layers({"Layers": raw})
    assert len(layers) == len(raw) > 20
    named = {n for layer in layers for n in layer.nodes}
    assert named <= set(by_name), named - set(by_name)
    inits = {t.name for t in model.graph.initializer}
    computing = {n.name for n in model.graph.node if n.op_type in ("Conv", "Add", "Relu", "MaxPool", "Gemm")}
    assert computing <= named, computing - named
    assert any("\x1f" in la["Metadata"] or "\x1e" in la["Metadata"] for la in raw), "fused nodes are joined"
    assert any(len(layer.nodes) > 1 for layer in layers)

    boundaries, unscaled = map_debug_tensors(model, layers)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][1:]
              for v in [*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.output]}
    outputs = {la["Name"]: la["Outputs"][0] for la in raw if len(la["Outputs"]) == 1}
    producers = {o: n for n in model.graph.node for o in n.output}
    # seen with 1.7.1.116: every BasicBlock's two quantized ReLU outputs but the last one (which feeds
    # the FP16 average pool), the max pool and the logits: 17 boundaries, none left out
    assert len(boundaries) >= 16, boundaries
    assert sum(b.onnx_tensor.endswith("Relu_output_0_DequantizeLinear_Output") for b in boundaries) >= 15
    for b in boundaries:
        layer = layers[b.layer]
        engine_out = outputs[layer.name]
        assert raw[b.layer]["LayerType"] != "correlation", (layer.name, b)
        assert engine_out["Dimensions"][1:] == shapes[b.onnx_tensor], (layer.name, b, engine_out)
        if engine_out["Datatype"] == "Int8":
            assert producers[b.onnx_tensor].op_type == "DequantizeLinear" and b.scale is not None and b.scale > 0
        else:
            assert b.scale is None
    assert not any(i in inits for b in boundaries for i in [b.onnx_tensor])
    assert unscaled == [], unscaled


# --- CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRT_VARIANTS)
def test_cli_build_rtx(rtx, demo_variants, tmp_path, run_cli, name) -> None:
    out = tmp_path / "m.engine"
    r = run_cli("build", demo_variants[name], "-o", out, "--runtime", "tensorrt-rtx")
    assert r.code == 0, r.err
    assert f"TensorRT-RTX {rtx.__version__} ahead of time" in r.out
    assert out.stat().st_size > 1_000_000 and load_record(out)["builder"]["family"] == "tensorrt-rtx"


@pytest.mark.parametrize("print_trtexec", [False, True])
@pytest.mark.parametrize("runtime", ["tensorrt-rtx", "tensorrt", "auto"])
def test_cli_refuses_what_no_parser_reads(rtx, demo_variants, tmp_path, run_cli, print_trtexec, runtime) -> None:
    bad = write_all(tmp_path)["non-zero-zero-point"]
    extra = ["--print-trtexec"] if print_trtexec else []
    for onnx_path, needles in ((demo_variants["int8-cpu"], ("quantized for the CPU", "--target tensorrt")),
                               (bad, ("input_QuantizeLinear", "non-zero zero point", "--target tensorrt"))):
        out = tmp_path / "x.engine"
        r = run_cli("build", onnx_path, "-o", out, "--runtime", runtime, *extra)
        assert_clean_error(r, 2, *needles)
        assert not out.exists() and not (tmp_path / "x.engine.json").exists() and r.out == ""


def test_the_refusal_is_the_same_without_nvidias_libraries(rtx, demo_variants, tmp_path, run_cli, monkeypatch) -> None:
    bad = write_all(tmp_path)["int32-bias"]
    for onnx_path in (demo_variants["int8-cpu"], bad):
        args = ("build", onnx_path, "-o", tmp_path / "x.engine")
        with_rtx = run_cli(*args)
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "tensorrt_rtx", None)
            without = run_cli(*args)
        assert_clean_error(without, 2, "--target tensorrt")
        assert without.err == with_rtx.err
    assert "'conv1.bias_DequantizeLinear' (DequantizeLinear) dequantizes an int32 initialiser" in without.err


def test_print_trtexec_for_tensorrt_rtx(demo_variants, run_cli) -> None:
    r = run_cli("build", demo_variants["fp16"], "-o", "m.engine", "--runtime", "tensorrt-rtx", "--print-trtexec",
                "--trt-version", "1.4", "--compute-capability", "7.5,8.6,current", "--workspace", "512")
    assert_clean_error(r, 2, "current", "only target")
    r = run_cli("build", demo_variants["fp16"], "-o", "m.engine", "--runtime", "tensorrt-rtx", "--print-trtexec",
                "--trt-version", "1.4", "--compute-capability", "7.5,12.0", "--workspace", "512")
    assert r.code == 0, r.err
    cmd = r.out.strip().splitlines()[-1].split()
    assert cmd[0] == "tensorrt_rtx" and "--saveEngine=m.engine" in cmd and "--skipInference" in cmd
    assert "--computeCapabilities=75,120" in cmd and "--memPoolSize=workspace:512" in cmd
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(cmd)
    for flag, needle in (("--timing-cache", "no timing cache"), ("--dla-core", "no DLA")):
        r = run_cli("build", demo_variants["fp16"], "-o", "m.engine", "--runtime", "tensorrt-rtx", "--print-trtexec",
                    flag, "0" if flag == "--dla-core" else "t.cache", "--min-batch", "1", "--opt-batch", "1",
                    "--max-batch", "1")
        assert_clean_error(r, 2, needle)
    r = run_cli("build", demo_variants["fp16"], "-o", "m.plan", "--print-trtexec", "--compute-capability", "8.6",
                "--runtime", "tensorrt")
    assert_clean_error(r, 2, "--compute-capability is for TensorRT-RTX")


def test_print_trtexec_auto_follows_what_is_installed(rtx, demo_variants, run_cli) -> None:
    """No TensorRT here, TensorRT-RTX installed: auto prints tensorrt_rtx's command; --trt-version names TensorRT's."""
    r = run_cli("build", demo_variants["int8-tensorrt"], "-o", "m.engine", "--print-trtexec")
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0].startswith(f"# TensorRT-RTX {rtx.__version__} (installed), int8 ONNX")
    assert lines[-1].split()[0] == "tensorrt_rtx"
    r = run_cli("build", demo_variants["int8-tensorrt"], "-o", "m.plan", "--print-trtexec", "--trt-version", "10.3")
    assert r.code == 0 and r.out.strip().splitlines()[-1].split()[0] == "trtexec"
