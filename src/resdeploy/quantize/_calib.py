"""Activation calibration: one pass over the calibration batches, per tensor the |x| maximum
and a 2048-bin histogram of |x| (re-binned as the range grows), then a symmetric threshold by
``minmax``, ``percentile`` (99.99%), ``entropy`` (TensorRT's KL-divergence search) or ``mse``
(the clip value minimising the expected quantization error)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import _onnx, _progress

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile", "mse")
BINS = 2048
QUANT_LEVELS = 128  # symmetric int8: 0..127 on each side
_MAX_SAMPLES = 1 << 21  # values per tensor per batch entering the histogram (strided subsample)


@dataclass
class TensorStats:
    absmax: float = 0.0
    minval: float = 0.0  # signed minimum (0 for post-ReLU tensors): picks u8 [0, t] vs [-t, t]
    hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.float64))
    edge: float = 0.0  # upper end of the histogram range

    def add(self, x: np.ndarray, with_hist: bool) -> None:
        a = np.abs(x, dtype=np.float32).ravel()
        m = float(a.max()) if a.size else 0.0
        self.absmax = max(self.absmax, m)
        if x.size:
            self.minval = min(self.minval, float(x.min()))
        if not with_hist or m == 0.0:
            return
        if self.edge == 0.0:
            self.edge = m
        while m > self.edge:  # double the range, merging bin pairs
            self.hist = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([self.hist, np.zeros(BINS // 2)])
            self.edge *= 2.0
        step = max(1, a.size // _MAX_SAMPLES)
        sub = a[::step]
        idx = np.minimum((sub * (BINS / self.edge)).astype(np.int64), BINS - 1)
        self.hist += np.bincount(idx, minlength=BINS)[:BINS] * float(step)


def _percentile(s: TensorStats, q: float = 99.99) -> float:
    cdf = np.cumsum(s.hist)
    i = int(np.searchsorted(cdf, cdf[-1] * q / 100.0))
    return min(s.absmax, (i + 1) * s.edge / BINS)


def _entropy(s: TensorStats) -> float:
    """TensorRT's entropy calibration, as NVIDIA's pytorch-quantization computes it: the threshold
    whose 128-level quantized distribution has the smallest KL divergence from the clipped
    reference (outliers folded into its last bin). The first bin is set to the second's count
    first: post-ReLU tensors hold a spike of exact zeros there that would otherwise pull every
    threshold down to a handful of bins. Ties go to the largest threshold."""
    bins = s.hist.copy()
    bins[0] = bins[1]
    best_kl, best_i = np.inf, BINS
    for i in range(QUANT_LEVELS, BINS + 1, 8):
        ref = bins[:i].copy()
        ref[-1] += bins[i:].sum()
        level = np.digitize(np.arange(i), np.linspace(0, i, QUANT_LEVELS + 1)) - 1
        nonzero = bins[:i] != 0
        sums = np.bincount(level[nonzero], weights=bins[:i][nonzero], minlength=QUANT_LEVELS)
        counts = np.bincount(level[nonzero], minlength=QUANT_LEVELS)
        q = np.where(nonzero, sums[level] / np.maximum(counts[level], 1), 0.0)
        if ref.sum() == 0 or q.sum() == 0:
            continue
        p, q = ref / ref.sum(), q / q.sum()
        mask = p > 0
        kl = np.inf if np.any(q[mask] == 0) else float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl <= best_kl:
            best_kl, best_i = kl, i
    return min(s.absmax, best_i * s.edge / BINS)


def _mse(s: TensorStats) -> float:
    centers = (np.arange(BINS) + 0.5) * (s.edge / BINS)
    candidates = np.arange(16, BINS + 1, 16) * (s.edge / BINS)
    best_err, best_t = np.inf, s.absmax
    for t in candidates:
        scale = t / 127.0
        q = np.clip(np.round(centers / scale), -127, 127) * scale
        err = float(np.sum(s.hist * (centers - q) ** 2))
        if err < best_err:
            best_err, best_t = err, float(t)
    return min(s.absmax, best_t)


def threshold(s: TensorStats, method: str) -> float:
    if s.absmax == 0.0:
        return 1e-8
    if method == "minmax" or s.hist.sum() == 0:
        return s.absmax
    return {"percentile": _percentile, "entropy": _entropy, "mse": _mse}[method](s)


def collect(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    batches: Iterable[dict[str, np.ndarray]],
    method: str,
    *,
    total: int | None = None,
) -> dict[str, TensorStats]:
    """Run ``model`` (FP32) over ``batches``, streaming statistics of each of ``tensors``."""
    sess = _onnx.session(_onnx.exposing(model, list(tensors)))
    names = list(tensors)
    stats = {n: TensorStats() for n in names}
    with_hist = method != "minmax"
    for feed in _progress.track(batches, total=total, desc=f"calibrate ({method})", unit="batch"):
        outs = sess.run(names, feed)
        for n, x in zip(names, outs, strict=True):
            stats[n].add(x, with_hist)
    return stats


def calibrate(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    batches: Iterable[dict[str, np.ndarray]],
    method: str,
    *,
    total: int | None = None,
) -> dict[str, float]:
    """A symmetric threshold per tensor."""
    stats = collect(model, tensors, batches, method, total=total)
    return {n: threshold(s, method) for n, s in stats.items()}


def ranges(stats: dict[str, TensorStats], method: str) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor for asymmetric (u8) activations: [0, t] where the tensor is never
    negative (after ReLU), else [-t, t]."""
    out = {}
    for n, s in stats.items():
        t = threshold(s, method)
        out[n] = (0.0 if s.minval >= 0.0 else -t, t)
    return out
