"""``resdeploy verify``: on the device, with nothing but the bundle, check that each artifact
computes what the workstation proved, and when it does not, say where.

A result compares the artifact's logits on the golden images with the expected logits of the
variant it implements (top-1 agreement, max and mean |logit error|), with the FP32 torch
logits, and with the golden labels. A failing ONNX candidate is run again with every
intermediate activation exposed, next to the bundled variant on ONNX Runtime's CPU kernels (the
workstation's), and the first tensor in topological order whose relative error exceeds the
variant's tolerance is named with its ONNX node and the torch module it came from. For a
TensorRT plan the Polygraphy command that does the same layer by layer is given.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io, _onnx
from ..engine.record import builder_family
from ..errors import UsageError
from .artifact import Artifact
from .base import BackendOptions
from .bundle import Bundle, BundleVariant, Tolerance
from .registry import backend_names, check_backend, get_backend, open_session

log = logging.getLogger(__name__)

__all__ = ["Divergence", "VerifyReport", "VerifyResult", "first_divergence", "verify"]

_DIAGNOSE_IMAGES = 8  # intermediate tensors of a ResNet-50 are ~100 MB per image: a few suffice


@dataclass
class Divergence:
    tensor: str
    node: str
    module: str
    rel_err: float
    tolerance: float


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


# --- layer by layer ---------------------------------------------------------------------------

_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_PASS_THROUGH = {"QuantizeLinear", "DequantizeLinear", "Cast", "Relu", "Clip", "MaxPool", "Identity"}


def _activations(model: Any) -> dict[str, int]:
    """Float activations (name -> ONNX element type) in topological order, without weight paths
    (tensors computed from initializers alone: a weight's Q/DQ, an FP16 copy)."""
    import onnx

    g = model.graph
    constant = {t.name for t in g.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *g.output]}
    names: dict[str, int] = {}
    for node in g.node:
        if node.op_type == "Constant" or all(i in constant for i in node.input if i):
            constant.update(node.output)
            continue
        names.update({o: elem[o] for o in node.output if o and elem.get(o) in _FLOAT_TYPES})
    return names


def _module_for(model: Any, tensor: str) -> tuple[str, str]:
    """(node, module) for the node producing ``tensor``; through Q/DQ, casts and ReLUs to the
    layer they belong to when the export's table does not name it."""
    from ..export._modules import module_of, read_node_modules

    table = read_node_modules(_onnx.metadata(model))
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers[tensor]
    current = node
    for _ in range(8):
        module = module_of(current, table, inits)
        if module != "?" or current.op_type not in _PASS_THROUGH:
            return node.name, module
        upstream = next((producers[i] for i in current.input if i in producers), None)
        if upstream is None:
            break
        current = upstream
    return node.name, module_of(node, table, inits)


def _run_exposed(path: Path, names: dict[str, int], x: np.ndarray, providers: list[Any] | None = None) -> dict[str, np.ndarray]:
    model = _onnx.load(path)
    sess = _onnx.session(_onnx.exposing(model, names), providers=providers)
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return dict(zip([o.name for o in sess.get_outputs()], outs, strict=True))


def _first_over(model: Any, order: list[str], got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                tolerance: float) -> Divergence | None:
    """The first of ``order`` present in both whose relative L2 error exceeds ``tolerance``."""
    worst: tuple[float, str] = (0.0, "")
    for name in order:
        if name not in got or name not in want:
            continue
        a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
        if a.shape != b.shape:
            if a.size != b.size:
                continue
            a = a.reshape(b.shape)  # TensorRT may report a debug tensor with another (equal-size) shape
        rel = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
        worst = max(worst, (rel, name))
        if rel > tolerance:
            node, module = _module_for(model, name)
            return Divergence(name, node, module, rel, tolerance)
    log.info("no intermediate tensor exceeds %.3g; the largest relative error is %.3g at %s", tolerance, *worst)
    return None


def first_divergence(candidate: Path, reference: Path, x: np.ndarray, tolerance: float,
                     providers: list[Any] | None = None) -> Divergence | None:
    """The first shared activation (topological order) where ``candidate`` departs from
    ``reference`` by more than ``tolerance`` (relative L2); None when every one is within it."""
    ref_names = _activations(_onnx.load(reference))
    cand_model = _onnx.load(candidate)
    cand_names = _activations(cand_model)
    shared = [n for n in cand_names if n in ref_names]
    if not shared:
        return None
    got = _run_exposed(candidate, {n: cand_names[n] for n in shared}, x, providers)
    want = _run_exposed(reference, {n: ref_names[n] for n in shared}, x)
    return _first_over(cand_model, shared, got, want, tolerance)


def plan_divergence(plan: Artifact, reference: Path, x: np.ndarray, tolerance: float) -> Divergence | None:
    """For a TensorRT plan (10.12+): rebuild the variant's ONNX with its unfused tensors marked as
    debug tensors (fusion kept, unlike marking outputs), run it on ``x`` collecting them, and
    compare each with ONNX Runtime's CPU value of the same ONNX tensor."""
    import tempfile

    from ..engine import BuildConfig, build_engine

    record = plan.record or {}
    lo, top = plan.batch_range()
    hi = top or len(x)
    x = np.concatenate([x] * -(-lo // len(x)))[: max(lo, min(len(x), hi))]  # within the plan's profile
    config = BuildConfig(min_batch=lo, opt_batch=len(x), max_batch=hi, dla_core=record.get("dla_core"),
                         debug_tensors=True)
    with tempfile.TemporaryDirectory(prefix="resdeploy-debug-") as tmp:
        debug_plan = Path(tmp) / "debug.plan"
        build_engine(reference, debug_plan, config, runtime="tensorrt")  # debug tensors are TensorRT's
        with open_session(Artifact.resolve(str(debug_plan)), "tensorrt", BackendOptions(debug_tensors=True)) as s:
            tensorrt_session: Any = s
            s.infer({s.input_name: x})
            got = dict(tensorrt_session.debug_tensors)
    model = _onnx.load(reference)
    names = _activations(model)
    want = _run_exposed(reference, {n: names[n] for n in names if n in got}, x)
    return _first_over(model, list(names), got, want, tolerance)


# --- verification -----------------------------------------------------------------------------


def _logits(art: Artifact, backend: str, x: np.ndarray) -> np.ndarray:
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


def _check(variant: BundleVariant, tol: Tolerance, art: Artifact, backend: str, x: np.ndarray, labels: np.ndarray,
           expected: dict[str, np.ndarray]) -> tuple[VerifyResult, np.ndarray]:
    got = _logits(art, backend, x)
    want, ref = expected[variant.name], expected["reference"]
    err = np.abs(got.astype(np.float64) - want)
    scale = float(np.abs(want).max())
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    passed = agreement >= tol.min_agreement and float(err.max()) <= tol.max_abs_err * scale
    return VerifyResult(
        artifact=str(art.path or art.text), variant=variant.name, backend=backend, n=len(labels),
        agreement_expected=agreement, agreement_reference=float(np.mean(got.argmax(1) == ref.argmax(1))),
        top1=float(np.mean(got.argmax(1) == labels)), max_abs_err_expected=float(err.max()),
        mean_abs_err_expected=float(err.mean()), passed=passed,
        tolerance={**tol.to_dict(), "max_abs_err_logits": tol.max_abs_err * scale},
        workstation_top1=variant.workstation.get("top1"),
    ), got


def _diagnose(bundle: Bundle, variant: BundleVariant, tol: Tolerance, art: Artifact, backend: str,
              result: VerifyResult, x: np.ndarray, err: np.ndarray) -> None:
    """Fill ``first_divergent`` (ONNX; a divergent layer fails the result) or the Polygraphy
    ``hint`` (plans) of a result."""
    if art.kind == "onnx" and art.path is not None:
        worst = np.sort(np.argsort(-err)[:_DIAGNOSE_IMAGES])  # the images that moved most
        providers = None
        if backend.startswith("ort-"):
            impl: Any = get_backend(backend)
            providers = impl.providers(BackendOptions(), art)
        result.first_divergent = first_divergence(art.path, bundle.root / variant.file, x[worst],
                                                  tol.layer_rel_err, providers)
        result.passed = result.passed and result.first_divergent is None
        return
    onnx = bundle.root / variant.file
    if art.kind == "plan" and builder_family(art.record) == "tensorrt" and _debug_tensors_here():
        worst = np.sort(np.argsort(-err)[:_DIAGNOSE_IMAGES])
        result.first_divergent = plan_divergence(art, onnx, x[worst], tol.layer_rel_err)
        return
    result.hint = polygraphy_command(onnx, tol, (art.record or {}).get("recipe", {}))


def _debug_tensors_here() -> bool:
    """TensorRT 10.12+ marks debug tensors without breaking fusion; older releases need Polygraphy."""
    from .._tensorrt import import_tensorrt
    from ..engine import parse_version

    trt = import_tensorrt()
    return trt is not None and parse_version(trt.__version__).at_least(10, 12)


def polygraphy_command(onnx: Path, tol: Tolerance, recipe: dict[str, Any]) -> str:
    """``polygraphy run`` comparing TensorRT with ONNX Runtime layer by layer on the golden images."""
    cmd = ["polygraphy", "run", onnx.name, "--trt", "--onnxrt", "--data-loader-script", "polygraphy_data.py",
           "--trt-outputs", "mark", "all", "--onnx-outputs", "mark", "all", "--fail-fast", "--validate",
           "--rtol", str(tol.layer_rel_err), "--atol", str(tol.layer_rel_err)]
    if recipe.get("strongly_typed") and recipe.get("generation") == "10":
        cmd.append("--strongly-typed")
    cmd += [f"--{flag.lower()}" for flag in recipe.get("set_flags", []) if flag in ("FP16", "INT8")]
    return f"(cd {shlex.quote(str(onnx.parent))} && {' '.join(shlex.quote(c) for c in cmd)})"


def _onnx_backends() -> list[str]:
    return [b for b in backend_names() if "onnx" in get_backend(b).kinds and get_backend(b).unavailable_reason() is None]


def verify(bundle_dir: str | Path, artifact: str | None = None, *, variant: str | None = None,
           backend: str = "auto", scale_tolerance: float = 1.0) -> VerifyReport:
    """Check each bundled ONNX on each backend that runs here, or one candidate against its variant.

    A candidate ONNX that is not byte-identical to its variant is also compared layer by layer
    (it passes only with no layer beyond the tolerance); otherwise the layers are compared when
    the outputs fail."""
    from .bench import environment

    bundle = Bundle.load(bundle_dir)
    x, labels = bundle.golden()
    expected = bundle.expected()
    if artifact is None:
        if variant is not None:
            bundle.variant(variant)  # a name that does not exist is bad input
        backends = _onnx_backends() if backend == "auto" else [backend]
        plan = [(v, Artifact.resolve(str(bundle.root / v.file)), b) for v in bundle.variants
                if variant in (None, v.name) for b in backends]
    else:
        art = Artifact.resolve(artifact)
        plan = [(_claimed_variant(bundle, art, variant), art, check_backend(art, backend)[0])]
    results = []
    for v, art, b in plan:
        check_backend(art, b)
        tol = v.tolerance.scaled(scale_tolerance)
        result, got = _check(v, tol, art, b, x, labels, expected)
        changed = art.kind == "onnx" and art.path is not None and _io.sha256_file(art.path) != v.sha256
        if not result.passed or changed:
            _diagnose(bundle, v, tol, art, b, result, x, np.abs(got - expected[v.name]).max(axis=1))
        results.append(result)
        log.info("%s as %s on %s: agreement %.4f, %s", art.name, v.name, b, result.agreement_expected,
                 "passed" if result.passed else "FAILED")
    info = {"path": str(bundle.root), "model": bundle.doc["model"]["spec"], "created": bundle.doc["created"],
            "workstation": bundle.doc["machine"], "golden": bundle.doc["golden"]}
    return VerifyReport(results, info, environment(None, "verify"))
