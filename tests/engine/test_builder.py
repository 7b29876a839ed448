"""build: the recipe per TensorRT generation, profile, workspace, timing cache, DLA, TF32 and
the record, checked against a recording fake of ``tensorrt``; --print-trtexec; no-TensorRT errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from resdeploy.engine import BuildConfig, build_engine
from resdeploy.errors import BuildError, UsageError
from resdeploy.runtime import Artifact, open_session

from ..conftest import assert_clean_error
from .fake_tensorrt import OTHER_DEVICE_CACHE, UNREADABLE_CACHE, make_fake

DEVICE = ("Fake Orin", (8, 7))


@pytest.fixture(scope="module")
def onnx_by_precision(demo_variants: dict[str, Path]) -> dict[str, Path]:
    return {"fp32": demo_variants["fp32"], "fp16": demo_variants["fp16"], "int8": demo_variants["int8-tensorrt"]}


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
    assert r1.record["timing_cache"] == {"path": str(cache), "loaded": False, "rejected": False}
    trt = fake(monkeypatch, "10.3.0")
    r2 = build_engine(onnx_by_precision["int8"], tmp_path / "b.plan", BuildConfig(timing_cache=str(cache)), device=DEVICE)
    assert names(trt, "config.create_timing_cache") == [b"+tuned"], "the saved cache is loaded"
    assert r2.record["timing_cache"]["loaded"] is True


def test_timing_cache_from_another_gpu_is_replaced(monkeypatch, tmp_path, onnx_by_precision, caplog) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(OTHER_DEVICE_CACHE)
    trt = fake(monkeypatch, "10.3.0")
    r = build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", BuildConfig(timing_cache=str(cache)), device=DEVICE)
    assert names(trt, "config.set_timing_cache") == [OTHER_DEVICE_CACHE, b""], "rejected, then an empty one"
    assert r.record["timing_cache"] == {"path": str(cache), "loaded": False, "rejected": True}
    assert "rejected the timing cache" in caplog.text
    assert cache.read_bytes() == b"+tuned", "rewritten for this device"


def test_invalid_profile_is_refused_not_built(monkeypatch) -> None:
    from resdeploy.engine.builder import _set_profile

    trt = fake(monkeypatch, "10.3.0")
    builder = trt.Builder(trt.ILogger())
    cfg = builder.create_builder_config()
    with pytest.raises(UsageError, match="rejected the optimisation profile"):
        _set_profile(trt, builder, cfg, "input", {"min": (8, 3, 32, 32), "opt": (4, 3, 32, 32), "max": (2, 3, 32, 32)})


@pytest.mark.parametrize("version", ["10.3.0", "11.4.1"])
def test_the_fake_refuses_precision_flags_on_strongly_typed_networks(version) -> None:
    """TensorRT fails such a build; so must the fake (or the tests above would prove nothing)."""
    trt = make_fake(version)
    logger = trt.ILogger()
    logger.log = lambda severity, msg: None
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    cfg = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32))
    cfg.add_optimization_profile(profile)
    if version.startswith("11"):
        assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
        assert hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        return
    cfg.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, cfg) is None
    assert any("strongly typed" in c[1] for c in trt.calls if c[0] == "log.error")


def test_weakly_typed_qdq_without_int8_fails_like_tensorrt_8_6(monkeypatch, tmp_path, onnx_by_precision) -> None:
    import resdeploy.engine.builder as builder
    from resdeploy.engine.recipe import Recipe

    fake(monkeypatch, "8.6.1.6")
    monkeypatch.setattr(builder, "choose_recipe", lambda *a: Recipe("8.6", "8.6", "int8", False, ("FP16",)))
    with pytest.raises(BuildError, match="could not build"):
        build_engine(onnx_by_precision["int8"], tmp_path / "m.plan", device=DEVICE)
    assert not (tmp_path / "m.plan").exists()


STATIC = dict(min_batch=1, opt_batch=1, max_batch=1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_dla_on_10_is_weakly_typed_as_trtexec_builds_it(monkeypatch, tmp_path, onnx_by_precision, precision) -> None:
    trt = fake(monkeypatch, "10.3.0.30")
    r = build_engine(onnx_by_precision[precision], tmp_path / "m.plan", BuildConfig(**STATIC, dla_core=1), device=DEVICE)
    state = built_state(trt)
    assert not state["strongly_typed"] and names(trt, "builder.create_network") == [0]
    assert state["device"] == "DLA" and state["dla_core"] == 1
    assert {"FP16", "GPU_FALLBACK"} <= set(state["flags"])
    assert r.record["dla_core"] == 1 and r.record["recipe"]["strongly_typed"] is False


def test_dla_on_11_4_1_is_strongly_typed_without_precision_flags(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "11.4.1.2")
    build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", BuildConfig(**STATIC, dla_core=0), device=DEVICE)
    state = built_state(trt)
    assert state["strongly_typed"] and state["device"] == "DLA" and state["flags"] == ["GPU_FALLBACK", "TF32"]
    assert names(trt, "parser.set_flag") == ["ADJUST_FOR_DLA"]


def test_dla_refusals(monkeypatch, tmp_path, onnx_by_precision) -> None:
    with pytest.raises(UsageError, match="static shape"):
        BuildConfig(dla_core=0)  # dynamic profile
    static = BuildConfig(**STATIC, dla_core=0)
    fake(monkeypatch, "10.3.0")
    with pytest.raises(UsageError, match=r"implicit quantization.*qdq-translator"):
        build_engine(onnx_by_precision["int8"], tmp_path / "m.plan", static, device=DEVICE)
    for version in ("11.2.0", "11.4.0"):
        fake(monkeypatch, version)
        with pytest.raises(UsageError, match=r"11\.4\.1") as info:
            build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", static, device=DEVICE)
        assert "calibration" not in str(info.value), "11.x has no implicit quantization to send users to"
    fake(monkeypatch, "11.4.1")
    with pytest.raises(UsageError, match="--precision fp16") as info:
        build_engine(onnx_by_precision["fp32"], tmp_path / "m.plan", static, device=DEVICE)
    assert "calibration" not in str(info.value)
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake("10.3.0", dla_cores=1))
    with pytest.raises(UsageError, match="1 DLA core"):
        build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", BuildConfig(**STATIC, dla_core=1), device=DEVICE)
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


def on_gpu(monkeypatch: pytest.MonkeyPatch, device: tuple[str, tuple[int, int]]) -> None:
    """Make resdeploy see a CUDA GPU (both places that ask torch)."""
    import resdeploy._tensorrt as probe
    import resdeploy.runtime.tensorrt_backend as backend

    monkeypatch.setattr(probe, "cuda_device", lambda index=0: device)
    monkeypatch.setattr(backend, "cuda_device", lambda index=0: device)


def test_plan_for_another_tensorrt_or_gpu_is_refused(monkeypatch, tmp_path, onnx_by_precision) -> None:
    fake(monkeypatch, "10.3.0.30")
    plan = tmp_path / "m.plan"
    build_engine(onnx_by_precision["fp16"], plan, device=DEVICE)
    fake(monkeypatch, "8.6.1.6")
    on_gpu(monkeypatch, DEVICE)
    with pytest.raises(UsageError, match=r"built with TensorRT 10\.3\.0\.30 but TensorRT 8\.6\.1\.6"):
        open_session(Artifact.resolve(str(plan)), "tensorrt")
    fake(monkeypatch, "10.3.0.26")
    with pytest.raises(UsageError, match=r"exact release"):
        open_session(Artifact.resolve(str(plan)), "tensorrt")
    fake(monkeypatch, "10.3.0.30")
    on_gpu(monkeypatch, ("RTX 4090", (8, 9)))
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
    r = run_cli("build", onnx_by_precision["fp32"], "-o", out, "--runtime", "tensorrt")
    assert_clean_error(r, 2, "TensorRT", "--print-trtexec")
    assert not out.exists() and not (tmp_path / "r.plan.json").exists()


def test_auto_without_either_builder_names_both(onnx_by_precision, tmp_path, run_cli, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # as on aarch64, where no wheel exists
    out = tmp_path / "r.plan"
    r = run_cli("build", onnx_by_precision["fp32"], "-o", out)
    assert_clean_error(r, 2, "neither TensorRT nor TensorRT-RTX", "python3-libnvinfer", "resdeploy[rtx]", "--print-trtexec")
    assert not out.exists() and not (tmp_path / "r.plan.json").exists()


@pytest.mark.parametrize("python, needle", [("same", "--system-site-packages"), ("3.8", "for Python 3.8")])
def test_jetpack_bindings_this_python_cannot_import_are_explained(onnx_by_precision, tmp_path, run_cli, monkeypatch,
                                                                  python, needle) -> None:
    """JetPack installs TensorRT's bindings for the system Python only (python3-libnvinfer)."""
    import sys

    import resdeploy._tensorrt as probe

    version = f"{sys.version_info.major}.{sys.version_info.minor}" if python == "same" else python
    site = tmp_path / "usr" / "lib" / f"python{version}" / "dist-packages" / "tensorrt"
    site.mkdir(parents=True)
    monkeypatch.setattr(probe, "SYSTEM_SITE", (str(tmp_path / "usr/lib/python3*/dist-packages/tensorrt"),))
    r = run_cli("build", onnx_by_precision["fp32"], "-o", tmp_path / "r.plan", "--runtime", "tensorrt")
    assert_clean_error(r, 2, needle, str(site))


def trtexec(run_cli, onnx: Path, *extra: str) -> list[str]:
    r = run_cli("build", onnx, "-o", "m.plan", "--print-trtexec", *extra)
    assert r.code == 0, r.err
    return r.out.strip().splitlines()[-1].split()


def test_print_trtexec_per_release(onnx_by_precision, run_cli) -> None:
    int8 = onnx_by_precision["int8"]
    v86 = trtexec(run_cli, int8, "--trt-version", "8.6", "--workspace", "1024")
    assert "--int8" in v86 and "--fp16" in v86 and "--stronglyTyped" not in v86
    assert "--memPoolSize=workspace:1024" in v86 and "--workspace=1024" not in v86, "8.6 deprecates --workspace"
    for version in ("10.3", "10.13"):
        v10 = trtexec(run_cli, int8, "--trt-version", version, "--workspace", "1024")
        assert "--stronglyTyped" in v10 and "--int8" not in v10 and "--fp16" not in v10
        assert "--memPoolSize=workspace:1024" in v10
    v11 = trtexec(run_cli, int8, "--trt-version", "11.4.1", "--workspace", "1024")
    assert not {"--stronglyTyped", "--int8", "--fp16"} & set(v11)
    assert "--memPoolSize=workspace:1024" in v11


def test_print_trtexec_dla_per_release(onnx_by_precision, run_cli) -> None:
    dla = ("--dla-core", "0", "--min-batch", "1", "--opt-batch", "1", "--max-batch", "1")
    v10 = trtexec(run_cli, onnx_by_precision["fp32"], "--trt-version", "10.3", *dla)
    assert "--stronglyTyped" not in v10 and {"--fp16", "--allowGPUFallback", "--useDLACore=0"} <= set(v10)
    for version in ("11.3", "11.4.0"):
        r = run_cli("build", onnx_by_precision["fp16"], "-o", "m.plan", "--print-trtexec", "--trt-version", version, *dla)
        assert_clean_error(r, 2, "11.4.1")
        assert "calibration" not in r.err
    v11 = trtexec(run_cli, onnx_by_precision["fp16"], "--trt-version", "11.4.1", *dla)
    assert not {"--fp16", "--int8", "--stronglyTyped", "--best"} & set(v11)
    assert {"--useDLACore=0", "--allowGPUFallback"} <= set(v11)


def test_unsupported_tensorrt_versions_are_named(onnx_by_precision, run_cli) -> None:
    r = run_cli("build", onnx_by_precision["fp32"], "-o", "m.plan", "--print-trtexec", "--trt-version", "8.5")
    assert_clean_error(r, 2, "not supported", "Python 3.8")
    r = run_cli("build", onnx_by_precision["fp32"], "-o", "m.plan", "--print-trtexec", "--trt-version", "ten")
    assert_clean_error(r, 2, "cannot read TensorRT version")


def test_print_trtexec_shapes_follow_the_profile(onnx_by_precision, run_cli) -> None:
    cmd = trtexec(run_cli, onnx_by_precision["fp32"], "--min-batch", "2", "--opt-batch", "4", "--max-batch", "8",
                  "--timing-cache", "t.cache", "--runtime", "tensorrt")
    assert "--minShapes=input:2x3x32x32" in cmd and "--optShapes=input:4x3x32x32" in cmd
    assert "--maxShapes=input:8x3x32x32" in cmd and "--timingCacheFile=t.cache" in cmd
    assert "--noTF32" in cmd


def test_bad_profile_is_a_usage_error(onnx_by_precision, run_cli) -> None:
    r = run_cli("build", onnx_by_precision["fp32"], "-o", "m.plan", "--print-trtexec", "--min-batch", "8", "--max-batch", "4")
    assert_clean_error(r, 2, "--min-batch")


def test_unreadable_timing_cache_is_a_rejected_one(monkeypatch, tmp_path, onnx_by_precision, caplog) -> None:
    """``create_timing_cache`` of bytes TensorRT cannot read gives None (Polygraphy guards it): rejected, not a crash."""
    import logging

    monkeypatch.setattr(logging.getLogger("resdeploy"), "propagate", True)  # a CLI test before may have stopped it
    trt = fake(monkeypatch, "10.3.0.30")
    cache = tmp_path / "t.cache"
    cache.write_bytes(UNREADABLE_CACHE)
    r = build_engine(onnx_by_precision["fp16"], tmp_path / "m.plan", BuildConfig(timing_cache=str(cache)), device=DEVICE)
    assert names(trt, "config.create_timing_cache") == [UNREADABLE_CACHE, b""]
    assert r.record["timing_cache"] == {"path": str(cache), "loaded": False, "rejected": True}
    assert cache.read_bytes() == b"+tuned", "rewritten after the build"
    assert "rejected the timing cache" in caplog.text


def test_one_tensorrt_logger_per_process(monkeypatch, tmp_path, onnx_by_precision) -> None:
    trt = fake(monkeypatch, "10.3.0.30")
    loggers = []
    real_builder = trt.Builder
    monkeypatch.setattr(trt, "Builder", lambda logger: loggers.append(logger) or real_builder(logger))
    for name in ("a", "b"):
        build_engine(onnx_by_precision["fp16"], tmp_path / f"{name}.plan", device=DEVICE)
    assert len(loggers) == 2 and loggers[0] is loggers[1]
