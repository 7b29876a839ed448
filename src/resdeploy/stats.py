"""Honest accuracy: a 95% Wilson interval for every top-1, and an exact McNemar test for every
drop measured against the FP32 reference on the same images.

On 10,000 images a 0.07 pp drop is 7 images; whether that is distinguishable from zero
depends on how many images the two models disagree on, which is what McNemar's test counts:
``b`` images only the reference gets right, ``c`` only the candidate; under "no difference"
``b ~ Binomial(b + c, 1/2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Drop", "mcnemar_exact", "paired_drop", "wilson_interval"]

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``correct / n`` (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _log_binom_pmf(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``2 * P(X <= min(b, c))`` for ``X ~ Binomial(b + c, 1/2)``,
    capped at 1 (1.0 when the models never disagree)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.exp(_log_binom_pmf(i, n)) for i in range(k + 1))
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class Drop:
    """A candidate's top-1 against the reference's, on the same images."""

    drop_pp: float  # reference top-1 minus candidate top-1, percentage points
    only_reference: int  # images only the reference classifies correctly (McNemar's b)
    only_candidate: int  # images only the candidate classifies correctly (c)
    p_value: float

    @property
    def distinguishable(self) -> bool:
        return self.p_value < 0.05

    def words(self) -> str:
        """One sentence a report can print."""
        verb = "is" if self.distinguishable else "is not"
        return (f"{self.drop_pp:+.2f} pp: {self.only_reference} images only FP32 gets right, {self.only_candidate} only "
                f"this variant; the difference {verb} distinguishable from zero (exact McNemar p = {self.p_value:.3g})")


def paired_drop(reference_correct: np.ndarray, candidate_correct: np.ndarray) -> Drop:
    """The drop and its exact McNemar test from per-image correctness (boolean arrays, same images)."""
    ref = np.asarray(reference_correct, dtype=bool)
    cand = np.asarray(candidate_correct, dtype=bool)
    if ref.shape != cand.shape:
        raise ValueError(f"per-image results differ in shape: {ref.shape} vs {cand.shape}")
    b = int(np.sum(ref & ~cand))
    c = int(np.sum(~ref & cand))
    n = max(1, ref.size)
    return Drop(100.0 * (b - c) / n, b, c, mcnemar_exact(b, c))
