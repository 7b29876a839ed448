"""``resdeploy verify``: on the device, with nothing but the bundle, check that each artifact
computes what the workstation proved, and when it does not, say where.

Three steps with results of their own, as Polygraphy's ``Comparator`` keeps them: :func:`run`
gives an artifact's logits on the golden images; :func:`compare` sets them against the
expected logits of the variant it implements (top-1 agreement, max and mean |logit error|),
the FP32 torch logits and the golden labels; :func:`~resdeploy.device.explain.explain` names
the first divergent layer of a candidate that failed (or changed).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from ..errors import UsageError
from ..runtime.artifact import Artifact
from ..runtime.base import BackendOptions
from ..runtime.registry import check_backend, open_session, usable_backends
from .bundle import Bundle, BundleVariant, Tolerance
from .environment import environment
from .explain import Divergence, explain

log = logging.getLogger(__name__)

__all__ = ["Divergence", "VerifyReport", "VerifyResult", "compare", "run", "verify"]


@dataclass
class VerifyResult:
    artifact: str
    variant: str
    backend: str
    n: int
    agreement_expected: float
    agreement_reference: float
    top1: float
    max_abs_err_expected: float
    mean_abs_err_expected: float
    passed: bool
    tolerance: dict[str, float]
    first_divergent: Divergence | None = None
    workstation_top1: float | None = None
    hint: str | None = None
    note: str | None = None  # what the layer comparison could not compare (TensorRT plans)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_divergent"] = asdict(self.first_divergent) if self.first_divergent else None
        return d


@dataclass
class VerifyReport:
    results: list[VerifyResult]
    bundle: dict[str, Any]
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "bundle": self.bundle, "env": self.env}



def run(art: Artifact, backend: str, x: np.ndarray) -> np.ndarray:
    """The first step: ``art``'s logits on ``x`` on ``backend``."""
    lo, hi = art.batch_range()
    with open_session(art, backend, BackendOptions(batch_hint=max(lo, min(32, hi or 32)))) as s:
        return s.logits(x, max_batch=32).astype(np.float32)


def _claimed_variant(bundle: Bundle, art: Artifact, name: str | None) -> BundleVariant:
    """The variant a candidate implements: --variant, else its source ONNX's sha256 (a plan's
    record, or the .onnx itself)."""
    if name:
        return bundle.variant(name)
    assert art.path is not None
    sha = ((art.record or {}).get("source_onnx") or {}).get("sha256") if art.kind == "plan" else _io.sha256_file(art.path)
    found = bundle.variant_by_sha(sha) if sha else None
    if found is None:
        raise UsageError(f"{art.path} is not one of the bundle's variants (no sha256 match); say which it implements "
                         f"with --variant {{{','.join(v.name for v in bundle.variants)}}}")
    return found


def compare(variant: BundleVariant, tol: Tolerance, artifact: str, backend: str, got: np.ndarray,
            labels: np.ndarray, expected: dict[str, np.ndarray]) -> VerifyResult:
    """The second step: ``got`` against the variant's expected logits, the FP32 reference and the labels."""
    want, ref = expected[variant.name], expected["reference"]
    err = np.abs(got.astype(np.float64) - want)
    scale = float(np.abs(want).max())
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    passed = agreement >= tol.min_agreement and float(err.max()) <= tol.max_abs_err * scale
    return VerifyResult(
        artifact=artifact, variant=variant.name, backend=backend, n=len(labels),
        agreement_expected=agreement, agreement_reference=float(np.mean(got.argmax(1) == ref.argmax(1))),
        top1=float(np.mean(got.argmax(1) == labels)), max_abs_err_expected=float(err.max()),
        mean_abs_err_expected=float(err.mean()), passed=passed,
        tolerance={**tol.to_dict(), "max_abs_err_logits": tol.max_abs_err * scale},
        workstation_top1=variant.workstation.get("top1"),
    )


def _candidates(bundle: Bundle, artifact: str | None, variant: str | None,
                backend: str) -> list[tuple[BundleVariant, Artifact, str]]:
    """(variant, artifact, backend) to check: every bundled ONNX on every backend, or the one candidate."""
    if artifact is None:
        if variant is not None:
            bundle.variant(variant)  # a name that does not exist is bad input
        backends = usable_backends("onnx") if backend == "auto" else [backend]
        return [(v, Artifact.resolve(str(bundle.root / v.file)), b) for v in bundle.variants
                if variant in (None, v.name) for b in backends]
    art = Artifact.resolve(artifact)
    return [(_claimed_variant(bundle, art, variant), art, check_backend(art, backend)[0])]


def verify(bundle_dir: str | Path, artifact: str | None = None, *, variant: str | None = None,
           backend: str = "auto", scale_tolerance: float = 1.0) -> VerifyReport:
    """Check each bundled ONNX on each backend that runs here, or one candidate against its variant.

    A candidate ONNX that is not byte-identical to its variant is also compared layer by layer
    (it passes only with no layer beyond the tolerance); otherwise the layers are compared when
    the outputs fail."""
    bundle = Bundle.load(bundle_dir)
    x, labels = bundle.golden()
    expected = bundle.expected()
    results = []
    for v, art, b in _candidates(bundle, artifact, variant, backend):
        check_backend(art, b)
        tol = v.tolerance.scaled(scale_tolerance)
        got = run(art, b, x)
        result = compare(v, tol, str(art.path or art.text), b, got, labels, expected)
        changed = art.kind == "onnx" and art.path is not None and _io.sha256_file(art.path) != v.sha256
        if not result.passed or changed:
            why = explain(bundle.root / v.file, tol, art, b, x, np.abs(got - expected[v.name]).max(axis=1))
            result.first_divergent, result.hint, result.note = why.first_divergent, why.hint, why.note
            result.passed = result.passed and not (why.decisive and why.first_divergent is not None)
        results.append(result)
        log.info("%s as %s on %s: agreement %.4f, %s", art.name, v.name, b, result.agreement_expected,
                 "passed" if result.passed else "FAILED")
    info = {"path": str(bundle.root), "model": bundle.doc["model"]["spec"], "created": bundle.doc["created"],
            "workstation": bundle.doc["machine"], "golden": bundle.doc["golden"]}
    return VerifyReport(results, info, environment(None, "verify"))
