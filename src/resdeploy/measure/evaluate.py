"""Accuracy on a labelled data set, and agreement with the FP32 reference, per artifact.

Fast and fair: images are decoded and resized once (on a pool of threads) into a uint8 cache
shared by every model; then each model runs alone over all of it, the FP32 reference first
(its logits cached on disk by model and data), so no two runtimes' thread pools ever spin
against each other. Every top-1 carries its 95% Wilson interval and every artifact's drop
against the reference an exact McNemar test on the same images.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import _progress
from ..data import Dataset, check_finite, load_dataset
from ..errors import DataSpecError, UsageError
from ..preprocess import Preprocess
from ..runtime.artifact import Artifact
from ..runtime.base import BackendOptions
from ..runtime.registry import check_backend, open_session, reference_backend
from ..stats import paired_drop, wilson_interval
from ._inputs import InputCache, reference_logits_cache

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvalReport", "EvalResult", "evaluate", "evaluate_stream", "topk_accuracy"]


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``resdeploy eval``; the CLI takes its defaults from here."""

    limit: int | None = None
    batch_size: int = 250
    threads: int | None = None
    workers: int | None = None  # decoding threads (None: one per core)
    cache_reference: bool = True  # keep the FP32 reference's logits under $RESDEPLOY_CACHE

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise UsageError(f"--eval-batch must be at least 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")


@dataclass
class EvalResult:
    artifact: str
    backend: str
    precision: str
    n: int
    top1: float
    top5: float
    agreement_top1: float
    max_abs_logit_err: float
    mean_abs_logit_err: float
    seconds: float
    top1_ci95: tuple[float, float] = (0.0, 1.0)
    drop_pp: float = 0.0
    drop_p_value: float = 1.0
    drop_words: str = ""
    images_per_second: float = 0.0
    predictions: np.ndarray | None = field(default=None, repr=False)  # top-1 class per image (not in JSON)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "predictions"}
        d["top1_ci95"] = list(self.top1_ci95)
        return d


@dataclass
class EvalReport:
    data: str
    results: list[EvalResult]
    reference: dict[str, Any]
    timing: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "results": [r.to_dict() for r in self.results], "reference": self.reference,
                "timing": self.timing}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _batches(inputs: InputCache, pre: Preprocess, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, inputs.n, batch_size):
        x = inputs.take(pre, start, start + batch_size)
        check_finite(x, f"evaluation data {inputs.dataset.name}")
        yield x


def predict(artifact: Artifact, backend: str, inputs: InputCache, config: EvalConfig) -> tuple[np.ndarray, float]:
    """Logits of one artifact over every image of ``inputs``, alone in its session; seconds of compute."""
    pre = inputs.preprocess_for(artifact)
    inputs.prepare(pre)
    seconds = 0.0
    out: list[np.ndarray] = []
    batch_hint = min(config.batch_size, artifact.batch_range()[1] or config.batch_size)
    with open_session(artifact, backend, BackendOptions(threads=config.threads, batch_hint=batch_hint)) as session:
        with _progress.counter(inputs.n, desc=f"eval {artifact.name} on {backend}", unit="img") as advance:
            for x in _batches(inputs, pre, config.batch_size):
                t0 = time.perf_counter()
                out.append(np.asarray(session.logits(x), dtype=np.float32))
                seconds += time.perf_counter() - t0
                advance(len(x))
    logits = np.concatenate(out)
    log.info("%s on %s: %d images in %.1f s of compute (%.0f img/s)", artifact.name, backend, inputs.n, seconds,
             inputs.n / max(seconds, 1e-9))
    return logits, seconds


def _result(art: Artifact, backend: str, logits: np.ndarray, ref_logits: np.ndarray, labels: np.ndarray,
            seconds: float) -> EvalResult:
    n = len(labels)
    correct = logits.argmax(1) == labels
    drop = paired_drop(ref_logits.argmax(1) == labels, correct)
    err = np.abs(logits.astype(np.float64) - ref_logits)
    return EvalResult(
        artifact=art.text, backend=backend, precision=art.precision, n=n,
        top1=float(correct.mean()), top5=topk_accuracy(logits, labels, 5),
        agreement_top1=float(np.mean(logits.argmax(1) == ref_logits.argmax(1))),
        max_abs_logit_err=float(err.max()), mean_abs_logit_err=float(err.mean()), seconds=round(seconds, 3),
        top1_ci95=wilson_interval(int(correct.sum()), n), drop_pp=drop.drop_pp, drop_p_value=drop.p_value,
        drop_words=drop.words(), images_per_second=round(n / max(seconds, 1e-9), 1),
        predictions=logits.argmax(1),
    )


def _reference_dict(reference: Artifact, backend: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    correct = int(np.sum(logits.argmax(1) == labels))
    n = len(labels)
    return {"artifact": reference.text, "backend": backend, "top1": correct / n, "top5": topk_accuracy(logits, labels, 5),
            "n": n, "top1_ci95": list(wilson_interval(correct, n))}


def evaluate(
    artifacts: list[Artifact],
    data: str | Dataset,
    *,
    reference: Artifact | None = None,
    backend: str | Sequence[str] = "auto",
    config: EvalConfig = EvalConfig(),
    trust_pickle: bool = False,
) -> EvalReport:
    """Top-1/top-5 of each artifact on ``data``, and its agreement with the FP32 reference
    (default: the torch model named in the first artifact's metadata). ``backend`` is one name
    for all, or one per artifact."""
    if not artifacts:
        raise UsageError("give at least one ARTIFACT to evaluate")
    start = time.perf_counter()
    dataset = load_dataset(data) if isinstance(data, str) else data
    n = len(dataset) if config.limit is None else min(config.limit, len(dataset))
    reference = reference or artifacts[0].reference(trust_pickle=trust_pickle)
    ref_backend = reference_backend(reference)
    backends = [backend] * len(artifacts) if isinstance(backend, str) else list(backend)
    if len(backends) != len(artifacts):
        raise UsageError(f"give one backend per artifact ({len(artifacts)}), got {len(backends)}")
    planned = [(art, check_backend(art, b)[0]) for art, b in zip(artifacts, backends, strict=True)]  # fail fast
    labels = dataset.labels[:n]
    with InputCache(dataset, np.arange(n), workers=config.workers or os.cpu_count() or 1) as inputs:
        with reference_logits_cache(reference, inputs, enabled=config.cache_reference) as cached:
            ref_logits, ref_seconds = cached.get() or predict(reference, ref_backend, inputs, config)
            cached.put(ref_logits, ref_seconds)
        dataset.check_classes(ref_logits.shape[1], f"the model {reference.name}")
        if int(labels.max()) >= ref_logits.shape[1]:
            raise DataSpecError(f"labels of {dataset.name} go up to {int(labels.max())} but the model has "
                                f"{ref_logits.shape[1]} classes; evaluate on data labelled for this model")
        results = []
        for art, name in planned:
            logits, seconds = predict(art, name, inputs, config)
            results.append(_result(art, name, logits, ref_logits, labels, seconds))
        decode = inputs.decode_seconds
    timing = {"decode_seconds": round(decode, 3), "reference_seconds": round(ref_seconds, 3),
              "wall_seconds": round(time.perf_counter() - start, 3)}
    return EvalReport(dataset.name, results, _reference_dict(reference, ref_backend, ref_logits, labels), timing)


# A streamed batch: images (float32 N,C,H,W already preprocessed; uint8 N,C,H,W or N,H,W, or a list of
# uint8 C,H,W images of any size, given the model's own preprocessing) and their labels.
Batch = tuple[np.ndarray | list[np.ndarray], np.ndarray | None]


class _Stream:
    """Each model's logits over a data set read once: every model runs on each batch in turn."""

    def __init__(self, models: list[tuple[Artifact, str]], config: EvalConfig) -> None:
        self.models, self.config = models, config
        self.logits: list[list[np.ndarray]] = [[] for _ in models]
        self.seconds = [0.0] * len(models)
        self.labels: list[np.ndarray] = []
        self.decode_seconds = 0.0

    def _inputs(self, x: np.ndarray | list[np.ndarray], art: Artifact, done: dict[Any, np.ndarray]) -> np.ndarray:
        if isinstance(x, np.ndarray) and x.dtype != np.uint8:
            return x
        pre = art.preprocess()
        if pre not in done:
            t0 = time.perf_counter()
            done[pre] = pre.apply(x)
            check_finite(done[pre], "evaluation data")
            self.decode_seconds += time.perf_counter() - t0
        return done[pre]

    def add(self, sessions: list[Any], x: np.ndarray | list[np.ndarray], y: np.ndarray) -> None:
        if isinstance(x, np.ndarray) and x.dtype != np.uint8:
            check_finite(x, "evaluation data")
        done: dict[Any, np.ndarray] = {}
        for i, ((art, _), session) in enumerate(zip(self.models, sessions, strict=True)):
            inputs = self._inputs(x, art, done)
            t0 = time.perf_counter()
            self.logits[i].append(np.asarray(session.logits(inputs, max_batch=self.config.batch_size), dtype=np.float32))
            self.seconds[i] += time.perf_counter() - t0
        self.labels.append(np.asarray(y, dtype=np.int64))

    def run(self, batches: Iterable[Batch]) -> None:
        limit = self.config.limit
        n = 0
        with contextlib.ExitStack() as stack:
            sessions = [stack.enter_context(open_session(a, b, BackendOptions(threads=self.config.threads)))
                        for a, b in self.models]
            it = iter(batches)
            with _progress.counter(limit, desc="eval (streamed)", unit="img") as advance:
                while limit is None or n < limit:
                    t0 = time.perf_counter()
                    batch = next(it, None)
                    self.decode_seconds += time.perf_counter() - t0
                    if batch is None:
                        break
                    x, y = batch
                    if y is None:
                        raise UsageError("evaluation needs labels: give (images, labels) batches or a labelled data set")
                    keep = len(y) if limit is None else min(len(y), limit - n)
                    self.add(sessions, x[:keep], np.asarray(y)[:keep])
                    n += keep
                    advance(keep)


def evaluate_stream(
    artifacts: list[Artifact],
    batches: Iterable[Batch],
    name: str,
    *,
    reference: Artifact,
    backend: str | Sequence[str] = "auto",
    config: EvalConfig = EvalConfig(),
) -> EvalReport:
    """:func:`evaluate` over ``batches`` read once, as they come (a data set larger than memory
    streams): for each batch the reference, then every artifact, each on its own session."""
    if not artifacts:
        raise UsageError("give at least one ARTIFACT to evaluate")
    start = time.perf_counter()
    backends = [backend] * len(artifacts) if isinstance(backend, str) else list(backend)
    if len(backends) != len(artifacts):
        raise UsageError(f"give one backend per artifact ({len(artifacts)}), got {len(backends)}")
    planned = [(art, check_backend(art, b)[0]) for art, b in zip(artifacts, backends, strict=True)]  # fail fast
    stream = _Stream([(reference, reference_backend(reference)), *planned], config)
    stream.run(batches)
    if not stream.labels:
        raise DataSpecError(f"{name} yielded no images; give a data set with images")
    labels = np.concatenate(stream.labels)
    ref_logits = np.concatenate(stream.logits[0])
    if labels.min() < 0 or int(labels.max()) >= ref_logits.shape[1]:
        raise DataSpecError(f"labels of {name} range over {int(labels.min())}..{int(labels.max())} but the model has "
                            f"{ref_logits.shape[1]} classes; evaluate on data labelled for this model")
    results = [_result(art, b, np.concatenate(stream.logits[i + 1]), ref_logits, labels, stream.seconds[i + 1])
               for i, (art, b) in enumerate(planned)]
    timing = {"decode_seconds": round(stream.decode_seconds, 3), "reference_seconds": round(stream.seconds[0], 3),
              "wall_seconds": round(time.perf_counter() - start, 3)}
    return EvalReport(name, results, _reference_dict(reference, stream.models[0][1], ref_logits, labels), timing)
