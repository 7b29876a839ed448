"""The tensorrt-rtx backend: where it refuses to run (no GPU, a GPU TensorRT-RTX does not support,
an engine built for other targets or by the other family) with the real ``tensorrt_rtx`` module,
and its run path (the tensorrt session it shares) against the fake ``tensorrt_rtx`` with CPU
tensors standing in for CUDA memory. No RTX GPU has run it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import resdeploy.runtime.tensorrt_rtx_backend as rtx_backend
from resdeploy.engine import BuildConfig, build_engine
from resdeploy.engine.trt_logging import make_logger
from resdeploy.errors import BackendUnavailableError, UsageError
from resdeploy.runtime import Artifact, BackendOptions, auto_backend, get_backend, open_session
from resdeploy.runtime.tensorrt_backend import open_plan

from .fake_tensorrt import CpuOps, make_fake

RTX_VERSION = "1.7.1.116"


def fake_rtx_engine(monkeypatch, tmp_path: Path, onnx: Path, config: BuildConfig = BuildConfig()) -> tuple[Any, Artifact]:
    trt = make_fake(RTX_VERSION, builder="tensorrt-rtx")
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", trt)
    plan = tmp_path / "m.engine"
    build_engine(onnx, plan, config, runtime="tensorrt-rtx")
    return trt, Artifact.resolve(str(plan))


@pytest.mark.parametrize("device, needle", [
    (None, "no CUDA GPU"), (("NVIDIA H200", (9, 0)), "compute capability 9.0"),
    (("Orin", (8, 7)), "compute capability 8.7"),
])
def test_unsupported_gpus_are_refused_with_the_reason(rtx, monkeypatch, device, needle) -> None:
    monkeypatch.setattr(rtx_backend, "_device", lambda index=0: device)
    reason = get_backend("tensorrt-rtx").unavailable_reason()
    assert reason is not None and needle in reason
    if device is not None:
        assert "not Hopper 9.0 nor Jetson 8.7" in reason and "--backend tensorrt" in reason


@pytest.mark.parametrize("cc", [(7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1)])
def test_supported_gpus_are_accepted(rtx, monkeypatch, cc) -> None:
    monkeypatch.setattr(rtx_backend, "_device", lambda index=0: ("RTX", cc))
    assert get_backend("tensorrt-rtx").unavailable_reason() is None


def test_session_runs_through_the_shared_tensorrt_session(monkeypatch, tmp_path, demo_variants) -> None:
    trt, art = fake_rtx_engine(monkeypatch, tmp_path, demo_variants["fp16"])
    assert auto_backend(art) == "tensorrt-rtx", "an engine's record names the backend that runs it"
    ops = CpuOps(trt)
    with open_plan(art, BackendOptions(cuda_graphs=True), lambda: ops, ("RTX 4090", (8, 9)), trt, "tensorrt-rtx") as s:
        assert s.backend == "tensorrt-rtx" and s.input_name == "input" and s.output_names == ["logits"]
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        for _ in range(2):
            out = s.infer({"input": x})["logits"]
        engine_weights = type(trt.Runtime(trt.ILogger()).deserialize_cuda_engine(
            b'FAKEPLAN{"device": "GPU", "profile": [[[1, 3, 32, 32], [1, 3, 32, 32], [1, 3, 32, 32]]]}')).weights
        np.testing.assert_allclose(out, x.mean(axis=(2, 3)) @ engine_weights, rtol=1e-5, atol=1e-5)
    assert [g.replays for g in ops.graphs] == [1], "CUDA graphs as in the tensorrt session: an eager run, then replays"
    assert make_logger(trt) is make_logger(trt), "one logger per module"


def test_engine_for_other_targets_or_release_or_family_is_refused(monkeypatch, tmp_path, demo_variants) -> None:
    trt, art = fake_rtx_engine(monkeypatch, tmp_path, demo_variants["fp16"], BuildConfig(compute_capabilities=("8.6",)))
    built = next(c[1] for c in trt.calls if c[0] == "builder.build_serialized_network")
    assert built["compute_capabilities"] == ["SM86"] and built["strongly_typed"] and built["flags"] == ["TF32"]
    with pytest.raises(UsageError, match=r"built for compute capabilities \['8\.6'\] but this GPU is 8\.9"):
        open_plan(art, BackendOptions(), lambda: CpuOps(trt), ("RTX 4090", (8, 9)), trt, "tensorrt-rtx")
    other = make_fake("1.6.1.120", builder="tensorrt-rtx")
    with pytest.raises(UsageError, match=r"TensorRT-RTX 1\.7\.1\.116 but TensorRT-RTX 1\.6\.1\.120 .*exact release"):
        open_plan(art, BackendOptions(), lambda: CpuOps(other), ("RTX 3090", (8, 6)), other, "tensorrt-rtx")
    tensorrt = make_fake("10.3.0.30")
    with pytest.raises(UsageError, match="built by tensorrt-rtx, not tensorrt; run it with --backend tensorrt-rtx"):
        open_plan(art, BackendOptions(), lambda: CpuOps(tensorrt), ("RTX 3090", (8, 6)), tensorrt, "tensorrt")
    assert not [c for c in [*other.calls, *tensorrt.calls] if c[0] == "runtime.deserialize_cuda_engine"]


def test_open_session_without_a_gpu_says_so(rtx, tmp_path, demo_variants) -> None:
    plan = tmp_path / "m.engine"
    build_engine(demo_variants["fp16"], plan, runtime="tensorrt-rtx")
    with pytest.raises(BackendUnavailableError, match="backend tensorrt-rtx is unavailable here: no CUDA GPU"):
        open_session(Artifact.resolve(str(plan)))


def test_one_logger_per_process_and_module(rtx) -> None:
    assert make_logger(rtx) is make_logger(rtx)
    fake = make_fake("10.3.0.30")
    assert make_logger(fake) is make_logger(fake) and make_logger(fake) is not make_logger(rtx)
