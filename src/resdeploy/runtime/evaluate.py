"""Accuracy on a labelled data set, and agreement with the FP32 reference, per artifact."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import _progress
from ..data import Dataset, load_dataset
from ..errors import DataSpecError, UsageError
from ..preprocess import Preprocess
from .artifact import Artifact
from .base import BackendOptions, Session
from .registry import check_backend, open_session

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvalReport", "EvalResult", "evaluate", "topk_accuracy"]


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``resdeploy eval``; the CLI takes its defaults from here."""

    limit: int | None = None
    batch_size: int = 250
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise UsageError(f"--eval-batch must be at least 1, got {self.batch_size}")


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    data: str
    results: list[EvalResult]
    reference: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "results": [r.to_dict() for r in self.results], "reference": self.reference}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _run(session: Session, x: np.ndarray, static_batch: int | None) -> np.ndarray:
    if static_batch is None or static_batch == len(x):
        return next(iter(session.infer({session.input_name: x}).values()))
    outs = []
    for start in range(0, len(x), static_batch):
        part = x[start : start + static_batch]
        pad = static_batch - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        outs.append(next(iter(session.infer({session.input_name: part}).values()))[: static_batch - pad])
    return np.concatenate(outs)


def _predict_all(
    items: list[tuple[str, Artifact, str]],
    dataset: Dataset,
    indices: np.ndarray,
    config: EvalConfig,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Logits of every (key, artifact, backend) over ``indices``; each batch preprocessed once
    per distinct preprocessing, so all artifacts see identical inputs."""
    pres: dict[str, Preprocess] = {key: art.preprocess() for key, art, _ in items}
    sessions: dict[str, Session] = {}
    logits: dict[str, list[np.ndarray]] = {key: [] for key, _, _ in items}
    seconds = dict.fromkeys(logits, 0.0)
    try:
        for key, art, backend in items:
            sessions[key] = open_session(art, backend, BackendOptions(threads=config.threads))
        starts = range(0, len(indices), config.batch_size)
        for start in _progress.track(starts, total=len(starts), desc=f"eval {dataset.name}", unit="batch"):
            part = indices[start : start + config.batch_size]
            cache: dict[Preprocess, np.ndarray] = {}
            for key, art, _ in items:
                pre = pres[key]
                if pre not in cache:
                    cache[pre] = dataset.take(part, pre)
                t0 = time.perf_counter()
                logits[key].append(np.asarray(_run(sessions[key], cache[pre], art.batch), dtype=np.float32))
                seconds[key] += time.perf_counter() - t0
    finally:
        for s in sessions.values():
            s.close()
    return {k: np.concatenate(v) for k, v in logits.items()}, seconds


def evaluate(
    artifacts: list[Artifact],
    data: str | Dataset,
    *,
    reference: Artifact | None = None,
    backend: str = "auto",
    config: EvalConfig = EvalConfig(),
) -> EvalReport:
    """Top-1/top-5 of each artifact on ``data``, and its agreement with the FP32 reference
    (default: the torch model named in the first artifact's metadata)."""
    if not artifacts:
        raise UsageError("give at least one ARTIFACT to evaluate")
    dataset = load_dataset(data) if isinstance(data, str) else data
    n = len(dataset) if config.limit is None else min(config.limit, len(dataset))
    indices = np.arange(n)
    if reference is None:
        reference = artifacts[0].reference()
    items = [(f"ref:{reference.text}", reference, "torch" if reference.kind == "model" else "ort-cpu")]
    for i, art in enumerate(artifacts):
        items.append((f"{i}:{art.text}", art, check_backend(art, backend)[0]))
    logits, seconds = _predict_all(items, dataset, indices, config)
    labels = dataset.labels[indices]
    ref_logits = logits[items[0][0]]
    if ref_logits.shape[1] <= int(labels.max()):
        raise DataSpecError(
            f"labels of {dataset.name} go up to {int(labels.max())} but the model has {ref_logits.shape[1]} classes; "
            "evaluate on data labelled for this model"
        )
    ref_top1 = ref_logits.argmax(1)
    results = []
    for key, art, name in items[1:]:
        lg = logits[key]
        err = np.abs(lg.astype(np.float64) - ref_logits)
        results.append(EvalResult(
            artifact=art.text, backend=name, precision=art.precision, n=n,
            top1=topk_accuracy(lg, labels, 1), top5=topk_accuracy(lg, labels, 5),
            agreement_top1=float(np.mean(lg.argmax(1) == ref_top1)),
            max_abs_logit_err=float(err.max()), mean_abs_logit_err=float(err.mean()),
            seconds=round(seconds[key], 3),
        ))
    ref = {"artifact": reference.text, "backend": items[0][2], "top1": topk_accuracy(ref_logits, labels, 1),
           "top5": topk_accuracy(ref_logits, labels, 5), "n": n}
    return EvalReport(dataset.name, results, ref)
