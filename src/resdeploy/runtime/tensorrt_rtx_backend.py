"""The ``tensorrt-rtx`` backend: a TensorRT-RTX engine run on an RTX GPU.

TensorRT-RTX's runtime API is TensorRT 11's (``Runtime``, ``ICudaEngine``, name-based I/O,
``execute_async_v3``), so the session is the tensorrt backend's :class:`TensorRTSession` with its
:class:`CudaOps`, opened by the same :func:`open_plan` with the ``tensorrt_rtx`` module. What
differs is where it can run: GPUs of compute capability 7.5, 8.0, 8.6, 8.9 and 12.x (TensorRT-RTX
support matrix); Hopper (9.0) and Jetson Orin (8.7) are refused with the reason.

NOT RUN ON A GPU BY THIS PROJECT (no RTX GPU has been lent): the run path is tested against the
fake module with CPU stand-in ops; the engines themselves are built by NVIDIA's builder in tests.
"""

from __future__ import annotations

from ..engine.recipe import FAMILIES
from ..errors import BackendUnavailableError, UsageError
from ._cuda import CudaOps, select_device
from .artifact import Artifact
from .base import Backend, BackendOptions, Session
from .registry import register_backend
from .tensorrt_backend import open_plan

__all__ = ["SUPPORTED_CAPABILITIES", "TensorRTRTXBackend", "rtx_unavailable_reason"]

# TensorRT-RTX's ComputeCapability targets: Turing, Ampere (GA100 and RTX), Ada, Blackwell 12.x.
SUPPORTED_CAPABILITIES = ((7, 5), (8, 0), (8, 6), (8, 9))


def supports(capability: tuple[int, int]) -> bool:
    return capability in SUPPORTED_CAPABILITIES or capability[0] == 12


def _device(index: int) -> tuple[str, tuple[int, int]] | None:
    from .._tensorrt import cuda_device

    return cuda_device(index)


def rtx_unavailable_reason(index: int = 0) -> str | None:
    """None when TensorRT-RTX and a GPU it supports are here; else what is missing."""
    from .._tensorrt import RTX_INSTALL_HINT, import_builder

    if import_builder(FAMILIES["tensorrt-rtx"].module) is None:
        return RTX_INSTALL_HINT
    device = _device(index)
    if device is None:
        return "no CUDA GPU is visible to torch (TensorRT-RTX engines run on RTX GPUs; they build without one)"
    name, cc = device
    if not supports(cc):
        return (f"{name} has compute capability {cc[0]}.{cc[1]}, which TensorRT-RTX does not support (7.5, 8.0, "
                "8.6, 8.9, 12.x; not Hopper 9.0 nor Jetson 8.7); build with --runtime tensorrt and use --backend tensorrt")
    return None


@register_backend
class TensorRTRTXBackend(Backend):
    name = "tensorrt-rtx"
    order = 41
    kinds = ("plan",)
    device = "cuda"
    summary = "a TensorRT-RTX engine on an RTX GPU, through the tensorrt session (never run in this project)"

    def unavailable_reason(self) -> str | None:
        return rtx_unavailable_reason()

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        from .._tensorrt import import_builder

        reason = rtx_unavailable_reason(options.device)
        device = _device(options.device)
        if reason is not None or device is None:
            raise BackendUnavailableError(f"backend tensorrt-rtx is unavailable: {reason}")
        if options.debug_tensors:
            raise UsageError("debug tensors are TensorRT's (10.12+), not TensorRT-RTX's; verify this engine "
                             "without them, or build a TensorRT plan")
        trt = import_builder(FAMILIES["tensorrt-rtx"].module)
        return open_plan(artifact, options, lambda: CudaOps(select_device(options.device)), device, trt, self.name)
