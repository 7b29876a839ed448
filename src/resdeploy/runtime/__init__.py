"""Runtime stage: one session interface over torch, ONNX Runtime, OpenVINO and TensorRT, and
the ``bench`` / ``eval`` / ``verify`` measurements built on it.

Importing the backend modules registers them (none imports its runtime at module level).
"""

from . import (  # noqa: F401 - registration
    openvino_backend,
    ort_backend,
    tensorrt_backend,
    tensorrt_rtx_backend,
    torch_backend,
)
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec, Timing
from .bench import BenchConfig, BenchResult, benchmark, benchmark_isolated, environment
from .evaluate import EvalConfig, EvalReport, EvalResult, evaluate, topk_accuracy
from .registry import (
    auto_backend,
    backend_help,
    backend_names,
    check_backend,
    get_backend,
    open_session,
    register_backend,
)

__all__ = [
    "Artifact",
    "Backend",
    "BackendOptions",
    "BenchConfig",
    "BenchResult",
    "EvalConfig",
    "EvalReport",
    "EvalResult",
    "Session",
    "TensorSpec",
    "Timing",
    "auto_backend",
    "backend_help",
    "backend_names",
    "benchmark",
    "benchmark_isolated",
    "check_backend",
    "environment",
    "evaluate",
    "get_backend",
    "open_session",
    "register_backend",
    "topk_accuracy",
]
