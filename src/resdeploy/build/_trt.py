"""Finding TensorRT: lazily, and telling the real bindings from tensorrt-stubs."""

from __future__ import annotations

import importlib
from typing import Any

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
