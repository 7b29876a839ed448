"""Numerical verification of an ONNX model against a reference on seeded inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _onnx
from ..errors import VerificationError

if TYPE_CHECKING:
    import onnx

# FP32 ONNX vs torch: max |error| within this fraction of the largest |logit|.
FP32_RELATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Check:
    batch: int
    max_abs_err: float
    max_abs_ref: float
    relative_err: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.relative_err <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def seeded_inputs(shape: Sequence[int], batch: int, seed: int) -> np.ndarray:
    """Standard-normal inputs: the statistics of a normalised image, reproducible."""
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def compare(
    candidate: onnx.ModelProto,
    reference: Callable[[np.ndarray], np.ndarray],
    *,
    input_shape: Sequence[int],
    batches: Sequence[int],
    tolerance: float = FP32_RELATIVE_TOLERANCE,
    seed: int = 0,
    what: str = "ONNX model",
) -> list[Check]:
    """Run ``candidate`` in ONNX Runtime and ``reference`` on the same seeded inputs.

    Raises :class:`VerificationError` when any batch exceeds ``tolerance``.
    """
    sess = _onnx.session(candidate)
    name = sess.get_inputs()[0].name
    checks = []
    for i, b in enumerate(batches):
        x = seeded_inputs(input_shape, b, seed + i)
        got = sess.run(None, {name: x})[0].astype(np.float64)
        ref = np.asarray(reference(x), dtype=np.float64)
        err = float(np.max(np.abs(got - ref)))
        scale = float(np.max(np.abs(ref)))
        checks.append(Check(b, err, scale, err / max(scale, 1e-12), tolerance))
    bad = [c for c in checks if not c.ok]
    if bad:
        c = bad[0]
        raise VerificationError(
            f"{what} disagrees with its reference at batch {c.batch}: max |error| {c.max_abs_err:.3g} is "
            f"{c.relative_err:.2e} of the largest logit (tolerance {tolerance:.0e}); rerun with --debug and "
            "report it with the model"
        )
    return checks


def torch_reference(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.numpy()

    return run


def onnx_reference(model: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    sess = _onnx.session(model, optimization="basic")
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]
