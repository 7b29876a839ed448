"""Activation calibration: one streaming pass over the calibration batches collects, per tensor,
the |x| maximum, the signed minimum and a 2048-bin histogram of |x|; every method's threshold
comes from those statistics, so trying another method, or another fallback set, never runs the
model again. Methods: ``minmax``, ``percentile`` (99.99%), ``entropy`` (TensorRT's KL-divergence
search) or ``mse`` (the clip value minimising the expected quantization error); ``auto`` (see
``_auto``) chooses among them by the error each causes on calibration images held out from the
threshold fit.

The held-out images' statistics are kept apart during the pass, their histogram range kept in step
with the rest's (both double together, merging bin pairs, as the range grows), so the two merge
exactly afterwards: the thresholds of the final model are fit on every calibration image."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import _onnx, _progress

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile", "mse")
AUTO = "auto"
BINS = 2048
QUANT_LEVELS = 128  # symmetric int8: 0..127 on each side
_MAX_SAMPLES = 1 << 18  # values per tensor per call entering the histogram (strided subsample)
CHUNK = 8  # images per ONNX Runtime call of the calibration pass (bounds its memory)
HOLDOUT_MAX = 64  # calibration images held out from the threshold fit for `auto`, at most
HOLDOUT_PIXELS = 1 << 18  # and at most this many input pixels (64 images at 64 px, 5 at 224 px)
HOLDOUT_MIN = 4


@dataclass
class TensorStats:
    absmax: float = 0.0
    minval: float = 0.0  # signed minimum (0 for post-ReLU tensors): picks u8 [0, t] vs [-t, t]
    hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.float64))
    edge: float = 0.0  # upper end of the histogram range, a power of two

    def grow(self, m: float) -> None:
        """Make the range reach ``m``: the first value sets it, then it doubles (so the ranges of
        two statistics kept in step, ``fit`` and ``held``, stay equal and merge exactly)."""
        self.__dict__.pop("_memo", None)
        if self.edge == 0.0:
            self.edge = m
        while m > self.edge:  # double the range, merging bin pairs
            self.hist = np.concatenate([self.hist.reshape(-1, 2).sum(axis=1), np.zeros(BINS // 2)])
            self.edge *= 2.0

    def add(self, x: np.ndarray, with_hist: bool = True) -> None:
        if not x.size:
            return
        self.__dict__.pop("_memo", None)
        hi, lo = float(x.max()), float(x.min())
        m = max(hi, -lo)
        self.absmax = max(self.absmax, m)
        self.minval = min(self.minval, lo)
        if not with_hist or m == 0.0:
            return
        self.grow(m)
        step = max(1, x.size // _MAX_SAMPLES)
        sub = np.abs(x.reshape(-1)[::step])
        idx = np.minimum((sub * np.float32(BINS / self.edge)).astype(np.int64), BINS - 1)
        self.hist += np.bincount(idx, minlength=BINS)[:BINS] * float(step)

    def merged(self, other: TensorStats) -> TensorStats:
        out = TensorStats(max(self.absmax, other.absmax), min(self.minval, other.minval), self.hist.copy(), self.edge)
        if other.edge == 0.0:
            return out
        if out.edge == 0.0:
            out.hist, out.edge = other.hist.copy(), other.edge
            return out
        theirs = TensorStats(other.absmax, other.minval, other.hist.copy(), other.edge)
        top = max(out.edge, theirs.edge)
        out.grow(top)
        theirs.grow(top)
        if not math.isclose(out.edge, theirs.edge, rel_tol=1e-9):
            raise ValueError("statistics of different ranges: keep them in step with grow()")
        out.hist = out.hist + theirs.hist
        return out


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
    """The clip value (one of 128 on the histogram's range) with the least expected squared error."""
    centers = (np.arange(BINS) + 0.5) * (s.edge / BINS)
    candidates = np.arange(16, BINS + 1, 16) * (s.edge / BINS)
    scale = candidates[:, None] / 127.0
    q = np.clip(np.round(centers[None, :] / scale), -127, 127) * scale
    err = ((centers[None, :] - q) ** 2) @ s.hist
    return min(s.absmax, float(candidates[int(np.argmin(err))]))


def threshold(s: TensorStats, method: str) -> float:
    if s.absmax == 0.0:
        return 1e-8
    if method == "minmax" or s.hist.sum() == 0:
        return s.absmax
    return {"percentile": _percentile, "entropy": _entropy, "mse": _mse}[method](s)


def thresholds(stats: dict[str, TensorStats], method: str) -> dict[str, float]:
    """A symmetric threshold per tensor (each computed once per statistics object and method)."""
    return {n: _cached(s, method) for n, s in stats.items()}


def _cached(s: TensorStats, method: str) -> float:
    memo = s.__dict__.setdefault("_memo", {})
    if method not in memo:
        memo[method] = threshold(s, method)
    return float(memo[method])


def ranges(stats: dict[str, TensorStats], method: str) -> dict[str, tuple[float, float]]:
    """(low, high) per tensor for asymmetric (u8) activations: [0, t] where the tensor is never
    negative (after ReLU), else [-t, t]."""
    out = {}
    for n, s in stats.items():
        t = _cached(s, method)
        out[n] = (0.0 if s.minval >= 0.0 else -t, t)
    return out


@dataclass
class Statistics:
    """What one pass over the calibration images leaves: each tensor's statistics over the images
    the thresholds are fit on (``fit``) and over the held-out images (``held``), the held-out
    feeds and the FP32 model's outputs on them."""

    fit: dict[str, TensorStats]
    held: dict[str, TensorStats]
    holdout: list[dict[str, np.ndarray]]
    holdout_outputs: list[np.ndarray]
    images: int
    held_chunks: list[np.ndarray] = field(default_factory=list)  # the held-out inputs, call by call
    held_kept: list[dict[str, np.ndarray]] = field(default_factory=list)  # ``keep`` tensors on them, likewise

    @property
    def holdout_images(self) -> int:
        return sum(len(next(iter(f.values()))) for f in self.holdout)

    def all(self) -> dict[str, TensorStats]:
        """Every calibration image: the fit and held-out statistics merged."""
        return {n: s.merged(self.held[n]) for n, s in self.fit.items()}


def holdout_size(images: int, pixels: int = 1) -> int:
    """Images held out from the threshold fit, of ``pixels`` (H x W) each: an eighth, at most
    HOLDOUT_MAX and HOLDOUT_PIXELS (but at least HOLDOUT_MIN); none when there are fewer than 32."""
    if images < 32:
        return 0
    return max(HOLDOUT_MIN, min(HOLDOUT_MAX, images // 8, HOLDOUT_PIXELS // max(pixels, 1)))


def _split(batches: Sequence[dict[str, np.ndarray]], held: int) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """(fit feeds, held-out feeds): the last ``held`` images are held out (the balanced sampler
    interleaves the classes, so the tail holds every class)."""
    fit: list[dict[str, np.ndarray]] = []
    out: list[dict[str, np.ndarray]] = []
    left = sum(len(next(iter(b.values()))) for b in batches) - held
    for b in batches:
        n = len(next(iter(b.values())))
        if left >= n:
            fit.append(b)
        elif left <= 0:
            out.append(b)
        else:
            fit.append({k: v[:left] for k, v in b.items()})
            out.append({k: v[left:] for k, v in b.items()})
        left -= n
    return fit, out


def collect(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    batches: Sequence[dict[str, np.ndarray]],
    *,
    holdout: int = 0,
    keep: Sequence[str] = (),
    desc: str = "calibrate",
) -> Statistics:
    """Run ``model`` (FP32) once over ``batches``, streaming statistics of each of ``tensors``;
    the last ``holdout`` images' statistics are kept apart, and the model's outputs and the
    ``keep`` tensors on them kept (the per-layer report's FP32 side, without another pass)."""
    names = list(dict.fromkeys(tensors))
    outputs = [o.name for o in model.graph.output]
    kept_names = [k for k in dict.fromkeys(keep) if k not in names and k not in outputs]
    sess = _onnx.session(_onnx.exposing(model, [*names, *kept_names]), spin=False)
    fit_feeds, held_feeds = _split(batches, holdout)
    fit = {n: TensorStats() for n in names}
    held = {n: TensorStats() for n in names}
    held_out: list[np.ndarray] = []
    held_chunks: list[np.ndarray] = []
    held_kept: list[dict[str, np.ndarray]] = []
    feeds = [(f, fit) for f in fit_feeds] + [(f, held) for f in held_feeds]
    run = [*outputs, *(n for n in names if n not in outputs)]
    for feed, into in _progress.track(feeds, total=len(feeds), desc=desc, unit="batch"):
        n_img = len(next(iter(feed.values())))
        for i in range(0, n_img, CHUNK):  # a few images at a time: every exposed activation is a copy
            chunk = {k: v[i:i + CHUNK] for k, v in feed.items()}
            extra = kept_names if into is held else []
            got = dict(zip(run + extra, sess.run(run + extra, chunk), strict=True))
            if into is held:
                held_out.append(got[outputs[0]])
                held_chunks.append(next(iter(chunk.values())))
                held_kept.append({k: got[k] for k in keep})
            other = fit if into is held else held
            for n in names:
                into[n].add(got[n])
                if into[n].edge:
                    other[n].grow(into[n].edge)
    images = sum(len(next(iter(b.values()))) for b in batches)
    return Statistics(fit, held, held_feeds, held_out, images, held_chunks, held_kept)


def calibrate(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    batches: Iterable[dict[str, np.ndarray]],
    method: str,
    *,
    total: int | None = None,
) -> dict[str, float]:
    """A symmetric threshold per tensor (one pass, no hold-out)."""
    stats = collect(model, tensors, list(batches), desc=f"calibrate ({method})")
    return thresholds(stats.all(), method)
