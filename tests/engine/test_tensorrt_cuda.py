"""The tensorrt session's CUDA half on a real GPU, around a GPU-side stand-in engine: the fake's
``execute_async_v3`` redone as real GPU work on the CUDA stream it is given, reading and writing
the raw device addresses the session bound. Buffers per shape, pinned staging, copies, events,
CUDA-graph capture and replay (and the fall-back when capture fails), owned outputs and trtexec's
timing figures. Collected everywhere, skipped with a reason without a CUDA GPU."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from resdeploy.runtime import BackendOptions
from resdeploy.runtime._cuda import CudaOps, _DeviceArray
from resdeploy.runtime.tensorrt_backend import TensorRTSession, open_plan

from . import test_tensorrt_backend as cpu_tests
from .fake_tensorrt import NUM_CLASSES
from .test_tensorrt_backend import DEVICE, expected, plan_for

pytestmark = pytest.mark.gpu
fp16_onnx = cpu_tests.fp16_onnx  # the same module-scoped fixture


class GpuStandIn:
    """``execute_async_v3`` as real GPU work: logits = spatial mean @ W, computed on ``stream``
    from the input address into the output address, without allocating (capture-safe, as a real
    engine's enqueue is). ``fail_capture`` makes it fail while a CUDA graph is being captured."""

    def __init__(self, session: TensorRTSession, weights: np.ndarray, fail_capture: bool = False) -> None:
        self.ctx, self.fail_capture, self.calls = session.context, fail_capture, 0
        self.weights = torch.from_numpy(weights).cuda()
        self.scratch: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.views: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def view(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The raw address as a tensor (made in the eager run, before any capture of this shape)."""
        key = (self.ctx.addresses[name], shape)
        if key not in self.views:
            self.views[key] = torch.as_tensor(_DeviceArray(key[0], shape, "<f4"), device="cuda")
        return self.views[key]

    def __call__(self, stream: int) -> bool:
        if self.fail_capture and torch.cuda.is_current_stream_capturing():
            return False
        self.calls += 1
        shape = self.ctx.shapes["input"]
        x, y = self.view("input", shape), self.view("logits", (shape[0], NUM_CLASSES))
        if shape not in self.scratch:
            self.scratch[shape] = (torch.empty(shape[:2], device="cuda"), torch.empty((*shape[:2], NUM_CLASSES), device="cuda"))
        mean, prod = self.scratch[shape]
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            torch.cuda._sleep(200_000)  # a measurable GPU compute time
            torch.mean(x, dim=(2, 3), out=mean)
            torch.mul(mean.unsqueeze(2), self.weights, out=prod)
            torch.sum(prod, dim=1, out=y)
        return True


def _session(monkeypatch, tmp_path, fp16_onnx, graphs: bool, fail_capture: bool = False) -> tuple[Any, Any, Any]:
    trt, art = plan_for(monkeypatch, tmp_path, fp16_onnx, "10.13.0.35")
    session = open_plan(art, BackendOptions(cuda_graphs=graphs), lambda: CudaOps("cuda:0"), DEVICE)
    engine_weights = type(session.engine).weights
    stand_in = GpuStandIn(session, engine_weights, fail_capture)
    session.context.execute_async_v3 = stand_in
    return trt, session, stand_in


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
def test_real_gpu_work_through_the_session(monkeypatch, tmp_path, fp16_onnx, graphs: bool) -> None:
    trt, session, stand_in = _session(monkeypatch, tmp_path, fp16_onnx, graphs)
    outs = []
    with session:
        for i, batch in enumerate((4, 2, 4, 4, 2)):
            x = np.random.default_rng(i).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            out, timing = session.timed({"input": x})
            np.testing.assert_allclose(out["logits"], expected(trt, x), rtol=1e-4, atol=1e-4)
            outs.append((out["logits"], out["logits"].copy()))
            assert min(timing.h2d_ms, timing.compute_ms, timing.d2h_ms) > 0
            assert timing.compute_ms > 0.05, "the stand-in's GPU work lies between the compute events"
            assert timing.enqueue_ms is not None and timing.host_memory == "pinned"
        assert all(t.is_pinned() for staged in session._staging.values() for t in staged.values())
        assert len(session._buffers) == 2, "device buffers once per shape"
        if graphs:
            assert len(session._graphs) == 2 and all(g is not None for g in session._graphs.values())
            assert stand_in.calls == 4, "one eager run and one capture per shape, then only graph replays"
        else:
            assert stand_in.calls == 5
    for got, copy in outs:
        np.testing.assert_array_equal(got, copy)  # owned: later runs reused the buffers, not these arrays


def test_a_failed_capture_falls_back_to_running_without_graphs(monkeypatch, tmp_path, fp16_onnx, caplog) -> None:
    trt, session, stand_in = _session(monkeypatch, tmp_path, fp16_onnx, graphs=True, fail_capture=True)
    caplog.set_level(logging.WARNING)
    with session:
        for _ in range(3):
            x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
            np.testing.assert_allclose(session.infer({"input": x})["logits"], expected(trt, x), rtol=1e-4, atol=1e-4)
        assert list(session._graphs.values()) == [None]
    assert stand_in.calls == 3
    assert any("CUDA graph capture failed" in r.getMessage() for r in caplog.records)
