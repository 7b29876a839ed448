"""Running artifacts: one session interface over torch, ONNX Runtime, OpenVINO and TensorRT
(``bench`` and ``eval`` measure through it in :mod:`resdeploy.measure`; the device-side proof
is :mod:`resdeploy.device`).

Importing the backend modules registers them (none imports its runtime at module level).
"""

from typing import Any

from . import (  # noqa: F401 - registration
    openvino_backend,
    ort_backend,
    tensorrt_backend,
    tensorrt_rtx_backend,
    torch_backend,
)
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec, Timing
from .registry import (
    auto_backend,
    backend_help,
    backend_names,
    check_backend,
    get_backend,
    open_session,
    reference_backend,
    register_backend,
    usable_backends,
)

__all__ = [
    "Artifact",
    "Backend",
    "BackendOptions",
    "Session",
    "TensorSpec",
    "Timing",
    "auto_backend",
    "backend_help",
    "backend_names",
    "check_backend",
    "get_backend",
    "open_session",
    "reference_backend",
    "register_backend",
    "usable_backends",
]

_MEASURE = ("BenchConfig", "BenchResult", "EvalConfig", "EvalReport", "EvalResult", "benchmark", "benchmark_isolated",
            "evaluate", "topk_accuracy")


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`resdeploy.measure` (bench, eval) and :mod:`resdeploy.device`
    (``environment``), still importable from here, loaded on first use."""
    if name in _MEASURE:
        from .. import measure

        return getattr(measure, name)
    if name == "environment":
        from ..device import environment

        return environment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
