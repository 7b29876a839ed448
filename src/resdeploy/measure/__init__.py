"""Measuring artifacts through the runtime's sessions: ``bench`` (latency percentiles and
throughput, each artifact in its own process) and ``eval`` (accuracy against the FP32 reference)."""

from .bench import BenchConfig, BenchResult, benchmark, benchmark_isolated
from .evaluate import EvalConfig, EvalReport, EvalResult, evaluate, evaluate_stream, topk_accuracy

__all__ = [
    "BenchConfig",
    "BenchResult",
    "EvalConfig",
    "EvalReport",
    "EvalResult",
    "benchmark",
    "benchmark_isolated",
    "evaluate",
    "evaluate_stream",
    "topk_accuracy",
]
