"""build: the recipe per TensorRT generation, profile, workspace, timing cache, DLA, TF32 and
the record, checked against a recording fake of ``tensorrt``; --print-trtexec; no-TensorRT errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from resdeploy.build import BuildConfig, build_engine
from resdeploy.errors import BuildError, UsageError
from resdeploy.quantize import QuantizeConfig, quantize
from resdeploy.runtime import Artifact, open_session

from ..conftest import assert_clean_error
from .fake_tensorrt import make_fake

DEVICE = ("Fake Orin", (8, 7))


@pytest.fixture(scope="module")
def onnx_by_precision(zoo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("prec")
    paths = {"fp32": zoo_onnx, "fp16": d / "fp16.onnx", "int8": d / "int8.onnx"}
    quantize(zoo_onnx, paths["fp16"], QuantizeConfig(precision="fp16"))
    quantize(zoo_onnx, paths["int8"], QuantizeConfig(precision="int8", calib="fashion-mnist:train", calib_size=64))
    return paths


def fake(monkeypatch: pytest.MonkeyPatch, version: str):
    trt = make_fake(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def built_state(trt) -> dict:
    return next(c[1] for c in trt.calls if c[0] == "builder.build_serialized_network")


def names(trt, call: str) -> list:
    return [c[1] for c in trt.calls if c[0] == call]


def test_tensorrt_8_6_int8_sets_int8_and_fp16(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "8.6.1.6")
    r = build_engine(onnx_by_precision["int8"], tmp_path / "m.plan", device=DEVICE)
    assert names(trt, "builder.create_network") == [1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)]
    assert sorted(names(trt, "config.set_flag")) == ["FP16", "INT8"]
    assert built_state(trt)["flags"] == ["FP16", "INT8", "TF32"]
    assert not built_state(trt)["monitor"], "8.x has no IProgressMonitor"
    assert r.record["recipe"] == {"generation": "8.6", "strongly_typed": False, "set_flags": ["INT8", "FP16"],
                                  "cleared_flags": [], "notes": []}


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_tensorrt_10_is_strongly_typed_without_precision_flags(monkeypatch, tmp_path, onnx_by_precision, precision) -> None:
    trt = fake(monkeypatch, "10.3.0.30")
    build_engine(onnx_by_precision[precision], tmp_path / "m.plan", device=DEVICE)
    assert names(trt, "builder.create_network") == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    assert names(trt, "config.set_flag") == []
    assert built_state(trt)["monitor"]


def test_tensorrt_11_has_no_precision_flags_at_all(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "11.0.0.1")
    assert not hasattr(trt.BuilderFlag, "INT8")
    r = build_engine(onnx_by_precision["int8"], tmp_path / "m.plan", device=DEVICE)
    assert names(trt, "builder.create_network") == [0]
    assert names(trt, "config.set_flag") == []
    assert r.record["recipe"]["strongly_typed"] is True  # always, in 11: no creation flag needed


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.0.0"])
def test_fp32_engines_clear_tf32(monkeypatch, tmp_path, onnx_by_precision, version) -> None:
    trt = fake(monkeypatch, version)
    build_engine(onnx_by_precision["fp32"], tmp_path / "m.plan", device=DEVICE)
    assert names(trt, "config.clear_flag") == ["TF32"]
    assert "TF32" not in built_state(trt)["flags"]
    assert not any(f in built_state(trt)["flags"] for f in ("FP16", "INT8"))


def test_profile_and_workspace(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "10.3.0")
    build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan",
                 BuildConfig(min_batch=2, opt_batch=4, max_batch=16, workspace_mib=512), device=DEVICE)
    assert [c for c in trt.calls if c[0] == "profile.set_shape"] == [
        ("profile.set_shape", "input", (2, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))]
    assert [c for c in trt.calls if c[0] == "config.set_memory_pool_limit"] == [
        ("config.set_memory_pool_limit", "WORKSPACE", 512 << 20)]


def test_timing_cache_round_trip(monkeypatch, tmp_path, onnx_by_precision) -> None:
    cache = tmp_path / "timing.cache"
    trt = fake(monkeypatch, "10.3.0")
    r1 = build_engine(onnx_by_precision["int8"], tmp_path / "a.plan", BuildConfig(timing_cache=str(cache)), device=DEVICE)
    assert names(trt, "config.create_timing_cache") == [b""]
    assert cache.read_bytes() == b"+tuned"
    assert r1.record["timing_cache"] == {"path": str(cache), "loaded": False}
    trt = fake(monkeypatch, "10.3.0")
    r2 = build_engine(onnx_by_precision["int8"], tmp_path / "b.plan", BuildConfig(timing_cache=str(cache)), device=DEVICE)
    assert names(trt, "config.create_timing_cache") == [b"+tuned"], "the saved cache is loaded"
    assert r2.record["timing_cache"]["loaded"] is True


def test_dla_settings(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "10.3.0")
    static = BuildConfig(min_batch=1, opt_batch=1, max_batch=1, dla_core=1)
    build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", static, device=DEVICE)
    state = built_state(trt)
    assert state["device"] == "DLA" and state["dla_core"] == 1
    assert "GPU_FALLBACK" in state["flags"]


def test_dla_refusals(monkeypatch, tmp_path, onnx_by_precision) -> None:
    with pytest.raises(UsageError, match="static shape"):
        BuildConfig(dla_core=0)  # dynamic profile
    static = BuildConfig(min_batch=1, opt_batch=1, max_batch=1, dla_core=0)
    fake(monkeypatch, "10.3.0")
    with pytest.raises(UsageError, match="implicit quantization"):
        build_engine(onnx_by_precision["int8"], tmp_path / "m.plan", static, device=DEVICE)
    fake(monkeypatch, "11.2.0")
    with pytest.raises(UsageError, match="no DLA"):
        build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", static, device=DEVICE)
    assert not (tmp_path / "m.plan").exists()


def test_record_beside_the_plan(monkeypatch, tmp_path, onnx_by_precision) -> None:
    from resdeploy._io import sha256_file

    fake(monkeypatch, "10.3.0.30")
    plan = tmp_path / "m.plan"
    build_engine(onnx_by_precision["int8"], plan, device=DEVICE)
    assert plan.read_bytes().startswith(b"FAKEPLAN")
    rec = json.loads((tmp_path / "m.plan.json").read_text())
    assert rec["tensorrt_version"] == "10.3.0.30" and rec["gpu"] == "Fake Orin" and rec["compute_capability"] == [8, 7]
    assert rec["precision"] == "int8"
    assert rec["source_onnx"]["sha256"] == sha256_file(onnx_by_precision["int8"])
    assert rec["onnx_metadata"]["resdeploy.source"] == "zoo:fashion-resnet18"
    assert rec["profile"] == {"input": {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]}}
    art = Artifact.resolve(str(plan))
    assert art.precision == "int8" and art.preprocess().input_size == 32


def test_plan_for_another_tensorrt_or_gpu_is_refused(monkeypatch, tmp_path, onnx_by_precision) -> None:
    import resdeploy.runtime.tensorrt_backend as backend

    fake(monkeypatch, "10.3.0.30")
    plan = tmp_path / "m.plan"
    build_engine(onnx_by_precision["fp16"], plan, device=DEVICE)
    fake(monkeypatch, "8.6.1.6")
    monkeypatch.setattr(backend, "cuda_device", lambda index=0: DEVICE)
    with pytest.raises(UsageError, match=r"built with TensorRT 10\.3\.0\.30 but TensorRT 8\.6\.1\.6"):
        open_session(Artifact.resolve(str(plan)), "tensorrt")
    fake(monkeypatch, "10.3.0.30")
    monkeypatch.setattr(backend, "cuda_device", lambda index=0: ("RTX 4090", (8, 9)))
    with pytest.raises(UsageError, match=r"compute capability 8\.7"):
        open_session(Artifact.resolve(str(plan)), "tensorrt")


def test_parser_failure_is_a_stage_error_and_writes_nothing(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "10.3.0")
    monkeypatch.setattr(trt.OnnxParser, "fail", True)
    with pytest.raises(BuildError, match="Unsupported ONNX op"):
        build_engine(onnx_by_precision["fp32"], tmp_path / "m.plan", device=DEVICE)
    assert not (tmp_path / "m.plan").exists() and not (tmp_path / "m.plan.json").exists()


# --- CLI, real environment (no TensorRT here) ----------------------------------------------


def test_build_without_tensorrt(onnx_by_precision, tmp_path, run_cli) -> None:
    out = tmp_path / "r.plan"
    r = run_cli("build", onnx_by_precision["fp32"], "-o", out)
    assert_clean_error(r, 2, "TensorRT", "--print-trtexec")
    assert not out.exists() and not (tmp_path / "r.plan.json").exists()


def trtexec(run_cli, onnx: Path, *extra: str) -> list[str]:
    r = run_cli("build", onnx, "-o", "m.plan", "--print-trtexec", *extra)
    assert r.code == 0, r.err
    return r.out.strip().splitlines()[-1].split()


def test_print_trtexec_per_generation(onnx_by_precision, run_cli) -> None:
    int8 = onnx_by_precision["int8"]
    v86 = trtexec(run_cli, int8, "--trt-version", "8.6", "--workspace", "1024")
    assert "--int8" in v86 and "--fp16" in v86 and "--stronglyTyped" not in v86
    assert "--workspace=1024" in v86
    v10 = trtexec(run_cli, int8, "--trt-version", "10", "--workspace", "1024")
    assert "--stronglyTyped" in v10 and "--int8" not in v10 and "--fp16" not in v10
    assert "--memPoolSize=workspace:1024" in v10
    v11 = trtexec(run_cli, int8, "--trt-version", "11", "--workspace", "1024")
    assert not {"--stronglyTyped", "--int8", "--fp16"} & set(v11)
    assert "--memPoolSize=workspace:1024" in v11


def test_print_trtexec_shapes_follow_the_profile(onnx_by_precision, run_cli) -> None:
    cmd = trtexec(run_cli, onnx_by_precision["fp32"], "--min-batch", "2", "--opt-batch", "4", "--max-batch", "8",
                  "--timing-cache", "t.cache")
    assert "--minShapes=input:2x3x32x32" in cmd and "--optShapes=input:4x3x32x32" in cmd
    assert "--maxShapes=input:8x3x32x32" in cmd and "--timingCacheFile=t.cache" in cmd
    assert "--noTF32" in cmd


def test_bad_profile_is_a_usage_error(onnx_by_precision, run_cli) -> None:
    r = run_cli("build", onnx_by_precision["fp32"], "-o", "m.plan", "--print-trtexec", "--min-batch", "8", "--max-batch", "4")
    assert_clean_error(r, 2, "--min-batch")
