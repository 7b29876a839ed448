"""Latency benchmarks users can trust: warm-up, percentiles, throughput per batch size, each
artifact timed alone in its own process so no other runtime's thread pool spins meanwhile."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ResdeployError, StageError, UsageError, from_payload, to_payload
from ._jetson import Sampler, conditions
from .artifact import Artifact
from .base import BackendOptions, Session
from .registry import check_backend, open_session

log = logging.getLogger(__name__)

__all__ = ["BenchConfig", "BenchResult", "benchmark", "benchmark_isolated", "environment", "summarize"]


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
    artifact: str
    backend: str
    precision: str
    batch: int
    latency_ms: dict[str, float]
    throughput_ips: float
    iters: int
    device: str = "cpu"
    copies_ms: dict[str, float] = field(default_factory=dict)
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


def _time_batch(session: Session, batch: int, config: BenchConfig) -> tuple[list[float], list[float], list[float]]:
    """Warm-up, then timed runs until ``iters`` (or ``max_seconds`` after ``min_iters``)."""
    spec = session.inputs[0]
    shape = (batch, *(d if d is not None else 1 for d in spec.shape[1:]))
    x = np.random.default_rng(config.seed).standard_normal(shape).astype(spec.dtype)
    feed = {spec.name: x}
    for _ in range(config.warmup):
        session.timed(feed)
    total: list[float] = []
    h2d: list[float] = []
    d2h: list[float] = []
    deadline = time.perf_counter() + config.max_seconds
    while len(total) < config.iters:
        _, t = session.timed(feed)
        total.append(t.total_ms)
        h2d.append(t.h2d_ms)
        d2h.append(t.d2h_ms)
        if len(total) >= config.min_iters and time.perf_counter() > deadline:
            break
    return total, h2d, d2h


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
            total, h2d, d2h = _time_batch(session, b, config)
            device = session.device
        lat = summarize(total)
        copies = {}
        if device != "cpu":
            copies = {"h2d_p50": float(np.median(h2d)), "d2h_p50": float(np.median(d2h)),
                      "compute_p50": float(np.median(np.asarray(total) - np.asarray(h2d) - np.asarray(d2h)))}
        results.append(BenchResult(
            artifact=artifact.text, backend=name, precision=artifact.precision, batch=b, latency_ms=lat,
            throughput_ips=b * 1000.0 / lat["mean"], iters=len(total), device=device, copies_ms=copies,
            conditions=sampler.summary(),
        ))
        log.info("%s on %s, batch %d: p50 %.2f ms over %d iterations", artifact.name, name, b, lat["p50"], len(total))
    return results


def benchmark_isolated(artifact_text: str, backend: str, config: BenchConfig, model_options: dict[str, Any] | None = None) -> list[BenchResult]:
    """Run :func:`benchmark` in a fresh Python process: only one runtime alive while timing.

    The worker answers with JSON on stdout: the results, or the error it met (its class, message
    and exit code), which is raised here again as the same class.
    """
    payload = json.dumps({"artifact": artifact_text, "backend": backend, "config": asdict(config),
                          "model_options": model_options or {}})
    proc = subprocess.run(
        [sys.executable, "-m", "resdeploy.runtime._bench_worker"], input=payload, capture_output=True, text=True,
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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None, isolation: str) -> dict[str, Any]:
    """The machine, library versions and, on a Jetson, its bench conditions; ``warnings`` lists
    what makes the figures wander (clocks not locked)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("resdeploy", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "tensorrt",
                "tensorrt-rtx", "openvino"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count() or 0,
        "threads": threads or os.cpu_count() or 0,
        "platform": platform.platform(),
        "versions": versions,
        "isolation": isolation,
        "warnings": [],
    }
    jetson = conditions()
    if jetson is not None:
        env["jetson"] = jetson
        env["warnings"] += jetson["warnings"]
    return env


def worker_main() -> int:
    """Child side of :func:`benchmark_isolated`: a JSON request on stdin, a JSON answer on stdout."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    req = json.loads(sys.stdin.read())
    cfg = req["config"]
    cfg["batches"] = tuple(cfg["batches"])
    try:
        artifact = Artifact.resolve(req["artifact"], **req.get("model_options", {}))
        results = benchmark(artifact, req["backend"], BenchConfig(**cfg))
    except ResdeployError as exc:
        sys.stdout.write(json.dumps({"error": to_payload(exc)}))
        return exc.exit_code
    sys.stdout.write(json.dumps({"results": [r.to_dict() for r in results]}))
    return 0
