"""Explaining a mismatch, the third step of ``resdeploy verify`` (after running and comparing):
where a candidate departs from the variant it implements.

A failing ONNX candidate is run again with every intermediate activation exposed, next to the
bundled variant on ONNX Runtime's CPU kernels (the workstation's), and the first tensor in
topological order whose relative error exceeds the variant's tolerance is named with its ONNX
node and the torch module it came from. A TensorRT plan is rebuilt with debug tensors where
TensorRT has them (10.12+); otherwise the Polygraphy command that does the same is given.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _onnx
from ..engine.record import builder_family
from ..runtime.artifact import Artifact
from ..runtime.base import BackendOptions
from ..runtime.registry import get_backend, open_session
from .bundle import Tolerance

log = logging.getLogger(__name__)

__all__ = ["Divergence", "Explanation", "explain", "first_divergence", "plan_divergence", "polygraphy_command"]

_DIAGNOSE_IMAGES = 8  # intermediate tensors of a ResNet-50 are ~100 MB per image: a few suffice


@dataclass
class Divergence:
    tensor: str
    node: str
    module: str
    rel_err: float
    tolerance: float


@dataclass
class Explanation:
    """Where a candidate departs: the first divergent layer, or the command that finds it on the
    device. ``decisive``: a divergent layer fails the candidate (ONNX, compared tensor by tensor)."""

    first_divergent: Divergence | None = None
    hint: str | None = None
    decisive: bool = False


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


def explain(variant_onnx: Path, tol: Tolerance, art: Artifact, backend: str, x: np.ndarray,
            err: np.ndarray) -> Explanation:
    """The first divergent layer of ``art`` against ``variant_onnx`` on the images whose logits moved
    most (``err`` per image); for a plan without debug tensors here, the Polygraphy command."""
    worst = np.sort(np.argsort(-err)[:_DIAGNOSE_IMAGES])
    if art.kind == "onnx" and art.path is not None:
        providers = None
        if backend.startswith("ort-"):
            impl: Any = get_backend(backend)
            providers = impl.providers(BackendOptions(), art)
        return Explanation(first_divergence(art.path, variant_onnx, x[worst], tol.layer_rel_err, providers), decisive=True)
    if art.kind == "plan" and builder_family(art.record) == "tensorrt" and _debug_tensors_here():
        return Explanation(plan_divergence(art, variant_onnx, x[worst], tol.layer_rel_err))
    return Explanation(hint=polygraphy_command(variant_onnx, tol, (art.record or {}).get("recipe", {})))


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
