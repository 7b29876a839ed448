"""Is TensorRT usable here? The one place that answers it, lazily, telling the real bindings
from PyPI's tensorrt-stubs (which make ``import tensorrt`` succeed as an empty namespace)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["INSTALL_HINT", "cuda_device", "import_tensorrt", "tensorrt_unavailable_reason"]

INSTALL_HINT = (
    "TensorRT's Python bindings are not installed (JetPack: apt install python3-libnvinfer; "
    "desktop: pip install --extra-index-url https://pypi.nvidia.com tensorrt)"
)


def import_tensorrt() -> Any:
    """The real ``tensorrt`` module, or None. tensorrt-stubs alone make ``import tensorrt``
    succeed as an empty namespace package, so look for ``Builder``."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return None
    return trt if hasattr(trt, "Builder") else None


def cuda_device(index: int = 0) -> tuple[str, tuple[int, int]] | None:
    """(GPU name, compute capability) through torch, or None without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (major, minor)


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT and a CUDA GPU are both here; else what is missing."""
    if import_tensorrt() is None:
        return INSTALL_HINT
    if cuda_device() is None:
        return "no CUDA GPU is visible to torch"
    return None
