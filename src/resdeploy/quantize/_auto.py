"""``--calib-method auto``: every method's thresholds come from the one set of calibration
statistics, fit on all but the last calibration images; each method's INT8 model is then run on
those held-out images, and the method whose logits are closest to the FP32 model's (output SQNR,
10 log10(sum ref^2 / sum (ref - int8)^2) over the held-out images) wins. Its thresholds are then
refit on every calibration image. The choice is per model: a per-tensor mix was not needed on the
fidelity benchmark's models (see README), and per model it costs one short run per method.

For the tensorrt target the candidates are scored with an FP32 remainder (the FP16 cast of the
unquantized layers is the same for every method, and slow on ONNX Runtime's CPU kernels)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx

from .. import _onnx, _progress

log = logging.getLogger(__name__)


def logit_scores(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], ref: np.ndarray) -> dict[str, float]:
    """Output SQNR (dB) and top-1 agreement of ``model`` against the FP32 outputs ``ref`` on ``feeds``."""
    sess = _onnx.session(model, spin=False)
    outs = [o.name for o in sess.get_outputs()][:1]
    got = np.concatenate([sess.run(outs, f)[0] for f in feeds]).astype(np.float64)
    r = ref.astype(np.float64)
    noise = float(np.sum((got - r) ** 2))
    sqnr = 200.0 if noise <= 0 else 10.0 * math.log10(max(float(np.sum(r * r)), 1e-30) / noise)
    return {"logit_sqnr_db": round(sqnr, 3), "agreement": float(np.mean(got.argmax(1) == r.argmax(1)))}


def choose(
    methods: Sequence[str],
    build: Callable[[str], onnx.ModelProto],
    feeds: Sequence[dict[str, np.ndarray]],
    ref: np.ndarray,
) -> tuple[str, dict[str, Any]]:
    """The method whose model's outputs on ``feeds`` are closest to ``ref`` (ties: the earlier in
    ``methods``), and every method's scores."""
    scores = {}
    for m in _progress.track(methods, total=len(methods), desc="auto calibration", unit="method"):
        scores[m] = logit_scores(build(m), feeds, ref)
        log.debug("auto: %s held-out logit SQNR %.2f dB, agreement %.4f", m, scores[m]["logit_sqnr_db"],
                 scores[m]["agreement"])
    best = max(methods, key=lambda m: (scores[m]["logit_sqnr_db"], -methods.index(m)))
    return best, scores
