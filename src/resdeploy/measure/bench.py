"""Latency benchmarks users can trust: warm-up, percentiles, throughput per batch size, each
artifact timed alone in its own process so no other runtime's thread pool spins meanwhile."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import StageError, UsageError, from_payload, numpy_abi_guard, to_payload
from ..runtime.artifact import Artifact
from ..runtime.base import BackendOptions, Session, Timing
from ..runtime.jetson import Sampler
from ..runtime.registry import check_backend, open_session

log = logging.getLogger(__name__)

__all__ = ["BenchConfig", "BenchResult", "benchmark", "benchmark_isolated", "gpu_figures", "summarize"]


@dataclass(frozen=True)
class BenchConfig:
    """Options of ``resdeploy bench``; the CLI takes its defaults from here."""

    batches: tuple[int, ...] = (1, 8)
    warmup: int = 10
    iters: int = 100
    max_seconds: float = 20.0  # per batch size: stop early (after >= min_iters) on slow models
    min_iters: int = 10
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise UsageError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.iters < 1 or self.warmup < 0:
            raise UsageError("--iters must be at least 1 and --warmup at least 0")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")


@dataclass
class BenchResult:
    """One (artifact, backend, batch). On a GPU also trtexec's figures: ``h2d_ms``, ``gpu_compute_ms``
    and ``d2h_ms`` break down the median iteration (they add up to ``latency_ms["p50"]``),
    ``enqueue_ms`` is the median host time of the enqueue call, ``host_memory`` says whether the
    copies came from pinned or pageable memory. ``throughput_ips`` is images over the host wall
    time of the timed iterations."""

    artifact: str
    backend: str
    precision: str
    batch: int
    latency_ms: dict[str, float]
    throughput_ips: float
    iters: int
    device: str = "cpu"
    h2d_ms: float | None = None
    gpu_compute_ms: float | None = None
    d2h_ms: float | None = None
    enqueue_ms: float | None = None
    host_memory: str | None = None
    conditions: dict[str, Any] | None = None  # on a Jetson: power, temperatures, GPU clock while timing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "std": float(a.std()),
    }


@dataclass
class _Samples:
    timings: list[Timing]
    wall_s: float  # host wall time over the timed iterations


def _time_batch(session: Session, batch: int, config: BenchConfig) -> _Samples:
    """Warm-up, then timed runs until ``iters`` (or ``max_seconds`` after ``min_iters``)."""
    spec = session.inputs[0]
    shape = (batch, *(d if d is not None else 1 for d in spec.shape[1:]))
    x = np.random.default_rng(config.seed).standard_normal(shape).astype(spec.dtype)
    feed = {spec.name: x}
    for _ in range(config.warmup):
        session.timed(feed)
    timings: list[Timing] = []
    start = time.perf_counter()
    deadline = start + config.max_seconds
    while len(timings) < config.iters:
        timings.append(session.timed(feed)[1])
        if len(timings) >= config.min_iters and time.perf_counter() > deadline:
            break
    return _Samples(timings, time.perf_counter() - start)


def gpu_figures(timings: list[Timing]) -> dict[str, Any]:
    """trtexec's breakdown for GPU sessions: the H2D, compute and D2H of the median iteration
    (the middle one, or the mean of the middle two, so they add up to the latency's p50), the
    median enqueue time and the host memory kind; empty for CPU sessions."""
    if not timings or timings[0].enqueue_ms is None:
        return {}
    order = sorted(range(len(timings)), key=lambda i: timings[i].total_ms)
    n = len(order)
    middle = [timings[i] for i in order[(n - 1) // 2 : n // 2 + 1]]
    return {
        "h2d_ms": float(np.mean([t.h2d_ms for t in middle])),
        "gpu_compute_ms": float(np.mean([t.compute_ms for t in middle])),
        "d2h_ms": float(np.mean([t.d2h_ms for t in middle])),
        "enqueue_ms": float(np.median([t.enqueue_ms or 0.0 for t in timings])),
        "host_memory": timings[0].host_memory,
    }


def benchmark(artifact: Artifact, backend: str, config: BenchConfig) -> list[BenchResult]:
    """Time ``artifact`` in this process (the caller isolates it; see :func:`benchmark_isolated`).

    Each batch size gets its own session, prepared for that batch (OpenVINO picks its
    latency or throughput hint from it)."""
    name, _ = check_backend(artifact, backend)
    results = []
    lo, hi = artifact.batch_range()
    for b in config.batches:
        if not lo <= b <= (hi or b):
            raise UsageError(f"{artifact.text} has a static batch of {lo}; bench it with --batch {lo}" if artifact.batch else
                             f"{artifact.text} runs batches {lo} to {hi} (its optimisation profile); bench it with --batch "
                             f"within them, or rebuild it with --min-batch/--max-batch")
        with open_session(artifact, name, BackendOptions(threads=config.threads, batch_hint=b)) as session, \
                Sampler() as sampler:
            samples = _time_batch(session, b, config)
            device = session.device
        lat = summarize([t.total_ms for t in samples.timings])
        results.append(BenchResult(
            artifact=artifact.text, backend=name, precision=artifact.precision, batch=b, latency_ms=lat,
            throughput_ips=b * len(samples.timings) / samples.wall_s, iters=len(samples.timings), device=device,
            conditions=sampler.summary(), **gpu_figures(samples.timings),
        ))
        log.info("%s on %s, batch %d: p50 %.2f ms over %d iterations", artifact.name, name, b, lat["p50"],
                 len(samples.timings))
    return results


def benchmark_isolated(artifact_text: str, backend: str, config: BenchConfig, model_options: dict[str, Any] | None = None) -> list[BenchResult]:
    """Run :func:`benchmark` in a fresh Python process: only one runtime alive while timing.

    The worker answers with JSON on stdout: the results, or the error it met (its class, message
    and exit code), which is raised here again as the same class.
    """
    payload = json.dumps({"artifact": artifact_text, "backend": backend, "config": asdict(config),
                          "model_options": model_options or {}})
    proc = subprocess.run(
        [sys.executable, "-m", "resdeploy.measure._bench_worker"], input=payload, capture_output=True, text=True,
        env=dict(os.environ),
    )
    try:
        answer = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        raise from_payload(answer["error"])
    if proc.returncode != 0 or not isinstance(answer, dict):
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}, no output"
        raise StageError(f"benchmark of {artifact_text} failed: {last}; rerun with --in-process --debug to see why")
    return [BenchResult(**r) for r in answer["results"]]


def worker_main() -> int:
    """Child side of :func:`benchmark_isolated`: a JSON request on stdin, a JSON answer on stdout.

    The answer goes to the original stdout alone: file descriptor 1 is pointed at stderr while
    working, so whatever a library prints (ONNX Runtime announces a provider fallback with
    ``print``) cannot corrupt it."""
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    req = json.loads(sys.stdin.read())
    cfg = req["config"]
    cfg["batches"] = tuple(cfg["batches"])
    with answer, numpy_abi_guard():  # what NumPy prints about a NumPy 1.x build names the module in the error
        try:
            artifact = Artifact.resolve(req["artifact"], **req.get("model_options", {}))
            results = benchmark(artifact, req["backend"], BenchConfig(**cfg))
        except Exception as exc:  # noqa: BLE001 - every error goes back to the parent, with its traceback
            error = to_payload(exc)
            answer.write(json.dumps({"error": error}))
            return int(error["exit_code"])
        answer.write(json.dumps({"results": [r.to_dict() for r in results]}))
    return 0
