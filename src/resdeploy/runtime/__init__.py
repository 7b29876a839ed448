"""Runtime stage: one session interface over torch, ONNX Runtime and TensorRT, and the
``bench`` / ``eval`` measurements built on it."""

from .artifact import Artifact
from .base import Backend, BackendOptions, Session, Timing
from .bench import BenchConfig, BenchResult, benchmark, benchmark_isolated, environment
from .evaluate import EvalConfig, EvalReport, EvalResult, evaluate, topk_accuracy
from .registry import BACKEND_NAMES, auto_backend, get_backend, open_session

__all__ = [
    "BACKEND_NAMES",
    "Artifact",
    "Backend",
    "BackendOptions",
    "BenchConfig",
    "BenchResult",
    "EvalConfig",
    "EvalReport",
    "EvalResult",
    "Session",
    "Timing",
    "auto_backend",
    "benchmark",
    "benchmark_isolated",
    "environment",
    "evaluate",
    "get_backend",
    "open_session",
    "topk_accuracy",
]
