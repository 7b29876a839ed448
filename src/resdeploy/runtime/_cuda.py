"""The CUDA side of the GPU sessions (``tensorrt``, ``torch-cuda``), through torch: device
buffers, pinned host staging, one stream, events, CUDA graphs, and copies of memory TensorRT owns.

Timing follows trtexec (NVIDIA/TensorRT ``samples/common/sampleInference.cpp`` and
``sampleReporting.cpp``): inputs are staged in pinned host memory, then per iteration the
host-to-device copy, the GPU compute and the device-to-host copy are timed with CUDA events on
the session's stream ("Latency" is their sum), and the host time of the enqueue call is
measured apart ("Enqueue Time"). Only :class:`CudaOps` touches CUDA, so the sessions' own logic
runs in the tests against a CPU stand-in with the same methods.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UsageError
from .base import Timing

log = logging.getLogger(__name__)

__all__ = ["CudaOps", "gpu_info", "host_copy", "select_device", "timed_on_stream"]

# torch dtype name -> (__cuda_array_interface__ typestr, NumPy dtype of the raw bytes). BF16 has
# no NumPy type: its bytes are read as int16 and reinterpreted by torch.
_RAW = {"float32": ("<f4", "float32"), "float16": ("<f2", "float16"), "bfloat16": ("<i2", "int16"),
        "int8": ("|i1", "int8"), "uint8": ("|u1", "uint8"), "int32": ("<i4", "int32"),
        "int64": ("<i8", "int64"), "bool": ("|b1", "bool")}


def select_device(index: int) -> str:
    """Make GPU ``index`` current before any TensorRT Runtime, Builder or buffer exists (they
    use the current device, whatever an option says), and name it for torch."""
    import torch

    if index < 0 or index >= torch.cuda.device_count():
        raise UsageError(f"CUDA device {index} does not exist here ({torch.cuda.device_count()} visible); "
                         "pick another index or set CUDA_VISIBLE_DEVICES")
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def gpu_info() -> list[dict[str, Any]]:
    """The CUDA GPUs torch sees (name, compute capability, memory) and its CUDA version; empty without one."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError) as exc:
        log.debug("no CUDA GPU: %s", exc)
        return []
    return [{"index": i, "name": p.name, "compute_capability": f"{p.major}.{p.minor}",
             "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda} for i, p in enumerate(props)]


def host_copy(address: int, shape: tuple[int, ...], dtype_name: str) -> np.ndarray:
    """An owned copy of host memory at ``address`` (a debug tensor TensorRT keeps on the host)."""
    import torch

    raw = np.dtype(_RAW[dtype_name][1])
    data = np.frombuffer(ctypes.string_at(address, math.prod(shape) * raw.itemsize), dtype=raw).reshape(shape)
    return _decoded(torch.from_numpy(data.copy()), dtype_name)


def _decoded(host: Any, dtype_name: str) -> np.ndarray:
    """NumPy values of a host tensor of raw bytes (BF16 widened to FP32: NumPy has no BF16)."""
    import torch

    if dtype_name == "bfloat16":
        return host.view(torch.bfloat16).float().numpy()
    return np.array(host.numpy())


class _DeviceArray:
    """Raw device memory as ``__cuda_array_interface__`` (version 3), writable."""

    def __init__(self, address: int, shape: tuple[int, ...], typestr: str) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (address, False),
                                         "version": 3}


class CudaOps:
    """Buffers, pinned staging, a stream, events and graphs on one CUDA device."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self.host_memory = "pinned"

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        import torch

        return torch.empty(shape, dtype=dtype, device=self.device)

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A page-locked host buffer (asynchronous copies need one); pageable where pinning fails."""
        import torch

        if self.host_memory == "pinned":
            try:
                return torch.empty(shape, dtype=dtype, pin_memory=True)
            except RuntimeError as exc:
                log.warning("pinned host memory unavailable (%s); copies use pageable memory and are slower", exc)
                self.host_memory = "pageable"
        return torch.empty(shape, dtype=dtype)

    def events(self, n: int) -> list[Any]:
        import torch

        return [torch.cuda.Event(enable_timing=True) for _ in range(n)]

    def on_stream(self) -> Any:
        import torch

        return torch.cuda.stream(self.stream)

    def to_host(self, address: int, shape: tuple[int, ...], dtype: Any, stream: int, on_host: bool = False) -> np.ndarray:
        """An owned copy of memory TensorRT owns (a debug tensor): read on TensorRT's ``stream``,
        so after the kernel that wrote it; host-resident tensors are read directly."""
        import torch

        name = str(dtype).rsplit(".", 1)[-1]
        if name not in _RAW:
            raise UsageError(f"debug tensors of type {name} are not supported")
        typestr, raw = _RAW[name]
        if math.prod(shape) == 0:
            return np.empty(shape, np.float32 if name == "bfloat16" else raw)
        if on_host:
            return host_copy(address, shape, name)
        view = torch.as_tensor(_DeviceArray(address, shape, typestr), device=self.device)
        with torch.cuda.stream(torch.cuda.ExternalStream(stream, device=self.device)):
            host = view.to("cpu")  # synchronous, ordered on TensorRT's stream
        return _decoded(host, name)

    def capture(self, fn: Callable[[], None]) -> Any:
        """A CUDA graph of ``fn`` (``.replay()`` runs it again), captured thread-local as trtexec
        does, so another thread's CUDA calls cannot invalidate it."""
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            fn()
        return graph

    def discard_capture_error(self) -> None:
        """After a failed capture: wait for the stream so its error is not met by the next run."""
        import torch

        try:
            self.stream.synchronize()
            torch.cuda.synchronize(self.device)
        except RuntimeError as exc:
            log.debug("after the failed capture: %s", exc)


def timed_on_stream(ops: Any, copy_in: Callable[[], None], enqueue: Callable[[], None],
                    copy_out: Callable[[], None]) -> Timing:
    """One iteration as trtexec times it: events around H2D, compute and D2H on the session's
    stream, and the host time of ``enqueue`` apart. Returns once the outputs are on the host."""
    ev = ops.events(4)
    with ops.on_stream():
        ev[0].record(ops.stream)
        copy_in()
        ev[1].record(ops.stream)
        start = time.perf_counter_ns()
        enqueue()
        enqueue_ms = (time.perf_counter_ns() - start) / 1e6
        ev[2].record(ops.stream)
        copy_out()
        ev[3].record(ops.stream)
    ev[3].synchronize()
    return Timing(compute_ms=ev[1].elapsed_time(ev[2]), h2d_ms=ev[0].elapsed_time(ev[1]),
                  d2h_ms=ev[2].elapsed_time(ev[3]), enqueue_ms=enqueue_ms, host_memory=ops.host_memory)
