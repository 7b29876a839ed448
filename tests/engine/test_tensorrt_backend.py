"""The tensorrt backend's own logic against the fake's Runtime / ICudaEngine / IExecutionContext,
with CPU tensors standing in for CUDA memory: input shapes, tensor addresses, outputs read back,
the CUDA-graph decision, the DLA core and the plan-record refusal. What it cannot prove: CUDA
streams, events and graphs themselves (see tests/engine/fake_tensorrt.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resdeploy.engine import BuildConfig, build_engine
from resdeploy.errors import UsageError
from resdeploy.runtime import Artifact, BackendOptions
from resdeploy.runtime.tensorrt_backend import open_plan

from .fake_tensorrt import CpuOps, make_fake

DEVICE = ("Fake Orin", (8, 7))


@pytest.fixture(scope="module")
def fp16_onnx(demo_variants: dict[str, Path]) -> Path:
    return demo_variants["fp16"]


def plan_for(monkeypatch, tmp_path: Path, onnx: Path, version: str, config: BuildConfig = BuildConfig()) -> Any:
    trt = make_fake(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = tmp_path / "m.plan"
    build_engine(onnx, plan, config, device=DEVICE)
    return trt, Artifact.resolve(str(plan))


def expected(trt: Any, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3)) @ type(trt.Runtime(trt.ILogger()).deserialize_cuda_engine(
        b'FAKEPLAN{"device": "GPU", "profile": [[[1, 3, 32, 32], [1, 3, 32, 32], [1, 3, 32, 32]]]}')).weights


def test_session_binds_shapes_and_addresses_and_reads_outputs(monkeypatch, tmp_path, fp16_onnx) -> None:
    trt, art = plan_for(monkeypatch, tmp_path, fp16_onnx, "10.3.0.30")
    ops = CpuOps(trt)
    with open_plan(art, BackendOptions(), lambda: ops, DEVICE) as session:
        assert session.input_name == "input" and session.output_names == ["logits"]
        assert session.inputs[0].shape == (None, 3, 32, 32)
        for batch in (4, 4, 2):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            out, timing = session.timed({"input": x})
            np.testing.assert_allclose(out["logits"], expected(trt, x), rtol=1e-5, atol=1e-5)
            assert timing.compute_ms == 0.25 and timing.h2d_ms == 0.25
        with pytest.raises(UsageError, match="outside the engine's optimisation profile"):
            session.infer({"input": np.zeros((64, 3, 32, 32), np.float32)})
        with pytest.raises(UsageError, match="takes inputs"):
            session.infer({"images": np.zeros((1, 3, 32, 32), np.float32)})
        with pytest.raises(UsageError, match="must be float32"):
            session.infer({"input": np.zeros((1, 3, 32, 32), np.float64)})
    shapes = [c[2] for c in trt.calls if c[0] == "context.set_input_shape"]
    assert shapes[:3] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert {c[1] for c in trt.calls if c[0] == "context.set_tensor_address"} == {"input", "logits"}
    assert all(c[1] == 7 for c in trt.calls if c[0] == "context.execute_async_v3"), "runs on the session's stream"
    assert ops.graphs == [], "no CUDA graphs unless asked"


def test_cuda_graphs_capture_once_per_shape_after_a_warm_run(monkeypatch, tmp_path, fp16_onnx) -> None:
    trt, art = plan_for(monkeypatch, tmp_path, fp16_onnx, "10.3.0.30")
    ops = CpuOps(trt)
    with open_plan(art, BackendOptions(cuda_graphs=True), lambda: ops, DEVICE) as session:
        x = np.ones((2, 3, 32, 32), np.float32)
        for _ in range(3):
            np.testing.assert_allclose(session.infer({"input": x})["logits"], expected(trt, x), rtol=1e-5)
        session.infer({"input": np.ones((1, 3, 32, 32), np.float32)})
    assert len(ops.graphs) == 2, "one graph per input shape"
    assert [g.replays for g in ops.graphs] == [2, 0], "the first run of a shape is eager, then captured"


def test_dla_plan_sets_the_runtime_dla_core_before_deserialising(monkeypatch, tmp_path, fp16_onnx) -> None:
    config = BuildConfig(min_batch=1, opt_batch=1, max_batch=1, dla_core=1)
    trt, art = plan_for(monkeypatch, tmp_path, fp16_onnx, "10.3.0.30", config)
    with open_plan(art, BackendOptions(), lambda: CpuOps(trt), DEVICE) as session:
        session.infer({"input": np.ones((1, 3, 32, 32), np.float32)})
    assert [c[1] for c in trt.calls if c[0] == "runtime.deserialize_cuda_engine"] == [1]


def test_runtime_refuses_a_plan_for_another_release_before_deserialising(monkeypatch, tmp_path, fp16_onnx) -> None:
    _, art = plan_for(monkeypatch, tmp_path, fp16_onnx, "10.3.0.30")
    other = make_fake("10.3.0.26")
    monkeypatch.setitem(sys.modules, "tensorrt", other)
    with pytest.raises(UsageError, match="exact release"):
        open_plan(art, BackendOptions(), lambda: CpuOps(other), DEVICE)
    assert not [c for c in other.calls if c[0] == "runtime.deserialize_cuda_engine"]
