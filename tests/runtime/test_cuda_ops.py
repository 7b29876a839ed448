"""The CUDA half of the GPU sessions (runtime/_cuda.py): debug-tensor copies for every dtype the
map knows, pinned staging, and torch-cuda timed as trtexec times. The gpu-marked tests are
collected everywhere and skipped with a reason without a CUDA GPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resdeploy.runtime._cuda import host_copy

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool]


def _sample(dtype: torch.dtype, shape: tuple[int, ...] = (2, 3, 5)) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100 if dtype.is_signed else 0, 100, shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_resident_debug_tensors_are_copied_from_their_address(dtype: torch.dtype) -> None:
    t = _sample(dtype)
    got = host_copy(t.data_ptr(), tuple(t.shape), str(dtype).rsplit(".", 1)[-1])
    want = (t.float().numpy() if dtype == torch.bfloat16 else t.numpy()).copy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    t.zero_()  # TensorRT reuses the memory once the listener returns: the copy must be owned
    np.testing.assert_array_equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_device_debug_tensors_are_copied_from_raw_pointers(dtype: torch.dtype) -> None:
    from resdeploy.runtime._cuda import CudaOps

    ops = CudaOps("cuda:0")
    want = _sample(dtype)
    with ops.on_stream():  # written on the stream the copy must wait for
        t = want.to("cuda:0", non_blocking=True)
    got = ops.to_host(t.data_ptr(), tuple(t.shape), dtype, ops.stream_handle)
    np.testing.assert_array_equal(got, want.float().numpy() if dtype == torch.bfloat16 else want.numpy())
    empty = ops.to_host(0, (0, 4), dtype, ops.stream_handle)
    assert empty.shape == (0, 4)
    pinned = ops.pinned((2, 3), dtype)
    assert pinned.is_pinned() and ops.host_memory == "pinned"


@pytest.mark.gpu
def test_torch_cuda_bench_json_carries_trtexec_figures(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "b.json"
    r = run_cli("bench", "zoo:fashion-resnet18", "--backend", "torch-cuda", "--batch", "1,32", "--iters", "50",
                "--warmup", "5", "--json", out)
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    assert data["env"]["gpus"] and data["env"]["gpus"][0]["compute_capability"]
    for res in data["results"]:
        assert res["backend"] == "torch-cuda" and res["device"].startswith("cuda")
        assert res["host_memory"] == "pinned"
        parts = res["h2d_ms"] + res["gpu_compute_ms"] + res["d2h_ms"]
        assert parts == pytest.approx(res["latency_ms"]["p50"], rel=1e-9)
        assert min(res["h2d_ms"], res["gpu_compute_ms"], res["d2h_ms"], res["enqueue_ms"]) > 0
        # Throughput over host wall time: below what the GPU-side latency alone would allow.
        assert 0 < res["throughput_ips"] <= res["batch"] * 1000.0 / res["latency_ms"]["min"]
    b1, b32 = data["results"]
    assert b32["h2d_ms"] > b1["h2d_ms"], "a larger batch copies more"


@pytest.mark.gpu
def test_torch_cuda_reference_in_eval(zoo_onnx: Path) -> None:
    from resdeploy.measure import EvalConfig, evaluate
    from resdeploy.runtime import Artifact

    report = evaluate([Artifact.resolve(str(zoo_onnx))], "fashion-mnist:test", backend="ort-cpu",
                      config=EvalConfig(limit=500, cache_reference=False))
    assert report.reference["backend"] == "torch-cuda"
    (res,) = report.results
    assert res.agreement_top1 >= 0.998 and res.max_abs_logit_err < 1e-3
