"""Is TensorRT usable here? The one place that answers it, lazily, telling the real bindings
from PyPI's tensorrt-stubs (which make ``import tensorrt`` succeed as an empty namespace)."""

from __future__ import annotations

import glob
import importlib
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["INSTALL_HINT", "RTX_INSTALL_HINT", "cuda_device", "import_builder", "import_tensorrt", "install_hint",
           "tensorrt_unavailable_reason"]

INSTALL_HINT = (
    "TensorRT's Python bindings are not installed (JetPack: apt install python3-libnvinfer; "
    "desktop: pip install --extra-index-url https://pypi.nvidia.com tensorrt)"
)


RTX_INSTALL_HINT = ("TensorRT-RTX's Python module is not installed (pip install 'resdeploy[rtx]'; "
                    "Linux and Windows x86_64 only: NVIDIA publishes no aarch64 wheels)")


# Where JetPack's python3-libnvinfer (and NVIDIA's Debian packages) put the bindings.
SYSTEM_SITE = ("/usr/lib/python3*/dist-packages/tensorrt", "/usr/local/lib/python3*/dist-packages/tensorrt")


def install_hint() -> str:
    """Why ``import tensorrt`` fails here, with the fix. On a Jetson the bindings usually are
    installed, system-wide, for the system Python: a virtual environment without
    ``--system-site-packages`` or another Python version cannot import them."""
    found = sorted(Path(p) for pattern in SYSTEM_SITE for p in glob.glob(pattern))
    if not found:
        return INSTALL_HINT
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    versions = {m.group(1) for p in found if (m := re.search(r"python(3\.\d+)", str(p)))}
    if here not in versions:
        return (f"TensorRT's Python bindings are installed for Python {', '.join(sorted(versions))} ({found[0]}) but this "
                f"is Python {here}; run resdeploy with that Python (a venv made from it)")
    return (f"TensorRT's Python bindings are installed system-wide ({found[0]}) but this virtual environment cannot see "
            "them; recreate it with `python3 -m venv --system-site-packages`")


def import_builder(module: str) -> Any:
    """The real ``tensorrt`` or ``tensorrt_rtx`` module, or None. tensorrt-stubs alone make
    ``import tensorrt`` succeed as an empty namespace package, so look for ``Builder``."""
    try:
        trt = importlib.import_module(module)
    except ImportError:
        return None
    return trt if hasattr(trt, "Builder") else None


def import_tensorrt() -> Any:
    """The real ``tensorrt`` module, or None."""
    return import_builder("tensorrt")


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
        return install_hint()
    if cuda_device() is None:
        return "no CUDA GPU is visible to torch"
    return None
