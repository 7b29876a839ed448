"""Explaining a mismatch, the third step of ``resdeploy verify`` (after running and comparing):
where a candidate departs from the variant it implements.

A failing ONNX candidate is run again with every intermediate activation exposed, next to the
bundled variant on ONNX Runtime's CPU kernels (the workstation's), and the first tensor in
topological order whose relative error exceeds the variant's tolerance is named with its ONNX
node and the torch module it came from. A TensorRT plan is rebuilt with debug tensors where
TensorRT has them (10.12+); otherwise the Polygraphy command that does the same is given.

TensorRT's debug tensors are not the network's tensors. ``markUnfusedTensorsAsDebugTensors``
(``include/NvInfer.h``, release/10.12+) warns that the listener gets TensorRT's *internal*
tensor names, "the names obtained by IEngineInspector", and that not every unfused tensor is
marked. So the debug engine is built at ``ProfilingVerbosity.DETAILED`` and its inspector's
JSON says, per engine layer, its input and output tensors (internal names, data types) and in
``Metadata`` the ONNX nodes the layer came from: the parser sets each layer's metadata to
``[ONNX Layer: NODE]`` and the builder joins those of the layers it fuses (separated by
``\\x1e`` or ``\\x1f``; seen in TensorRT-RTX 1.7's own build log, asserted in
``tests/engine/test_rtx.py``). A layer's output is compared, at the boundary of the fused
layer, with the ONNX tensor that leaves the set of nodes it names, provided none of them is
still being computed by a later layer (a convolution is often split into a ``correlation`` and a
``kgen`` epilogue that both name it). An INT8 output is a QuantizeLinear's codes: it is
dequantized with that node's scale and compared with the DequantizeLinear after it, or left out
when no per-tensor scale is found.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass, field
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

__all__ = ["Boundary", "Divergence", "EngineLayer", "Explanation", "engine_layers", "explain", "first_divergence",
           "map_debug_tensors", "plan_divergence", "polygraphy_command"]

_DIAGNOSE_IMAGES = 8  # intermediate tensors of a ResNet-50 are ~100 MB per image: a few suffice
_MIN_MAPPED_FRACTION = 0.25  # fewer fused layers than this compared: too few to vouch for the plan
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]*)\]")


@dataclass
class Divergence:
    """The first tensor beyond the tolerance: the ONNX ``tensor`` compared, the ``node`` and torch
    ``module`` that computed it; for a TensorRT plan also the fused engine ``layer``, all the ONNX
    nodes it runs (``layer_nodes``, weight paths left out) and their modules, and the TensorRT
    internal name of the ``debug_tensor``."""

    tensor: str
    node: str
    module: str
    rel_err: float
    tolerance: float
    layer: str | None = None
    layer_nodes: list[str] = field(default_factory=list)
    layer_modules: list[str] = field(default_factory=list)
    debug_tensor: str | None = None


@dataclass
class Explanation:
    """Where a candidate departs: the first divergent layer, or the command that finds it on the
    device. ``decisive``: a divergent layer fails the candidate (ONNX, compared tensor by tensor)."""

    first_divergent: Divergence | None = None
    hint: str | None = None
    decisive: bool = False
    note: str | None = None  # what could not be compared, in one line


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
    worst: tuple[float, str] | None = None
    for name in order:
        if name not in got or name not in want:
            continue
        a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
        if a.shape != b.shape:
            if a.size != b.size:
                continue
            a = a.reshape(b.shape)  # TensorRT may report a debug tensor with another (equal-size) shape
        rel = _rel_err(a, b)
        worst = max(worst or (rel, name), (rel, name))
        if rel > tolerance:
            node, module = _module_for(model, name)
            return Divergence(name, node, module, rel, tolerance)
    if worst is None:
        log.warning("no intermediate tensor could be compared")
    else:
        log.info("no intermediate tensor exceeds %.3g; the largest relative error is %.3g at %s", tolerance, *worst)
    return None


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


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


@dataclass(frozen=True)
class EngineLayer:
    """One layer of the engine inspector's JSON: its name, the ONNX nodes its ``Metadata`` names
    (in the order given) and its outputs as (TensorRT's name, data type as the inspector writes it)."""

    name: str
    nodes: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]


def engine_layers(info: str | dict[str, Any]) -> list[EngineLayer]:
    """The layers of ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``, in
    execution order. An engine built below ``ProfilingVerbosity.DETAILED`` lists layer names
    only: no layer comes back then."""
    doc = json.loads(info) if isinstance(info, str) else info
    layers = []
    for raw in doc.get("Layers", []) if isinstance(doc, dict) else []:
        if not isinstance(raw, dict):
            continue
        outputs = tuple((str(o.get("Name", "")), str(o.get("Format/Datatype") or o.get("Datatype") or ""))
                        for o in raw.get("Outputs", []) if isinstance(o, dict))
        layers.append(EngineLayer(str(raw.get("Name", "")), tuple(_ONNX_LAYER.findall(str(raw.get("Metadata") or ""))),
                                  outputs))
    return layers


@dataclass(frozen=True)
class Boundary:
    """A debug tensor matched to the ONNX tensor ONNX Runtime computes for it: at the output of
    engine layer ``layer``; ``scale`` dequantizes an INT8 debug tensor."""

    debug_tensor: str
    onnx_tensor: str
    layer: int
    scale: float | None = None


def _is_int8(datatype: str) -> bool:
    return "int8" in datatype.lower() and "uint8" not in datatype.lower()


def _scalar(model: Any, name: str) -> float | None:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            v = numpy_helper.to_array(t)
            return float(v.reshape(())) if v.size == 1 else None
    for node in model.graph.node:
        if node.op_type == "Constant" and name in node.output:
            v = numpy_helper.to_array(node.attribute[0].t)
            return float(v.reshape(())) if v.size == 1 else None
    return None


def map_debug_tensors(model: Any, layers: list[EngineLayer]) -> tuple[list[Boundary], list[str]]:
    """(boundaries in execution order, INT8 debug tensors left out for want of a per-tensor scale).

    A layer's single output is matched by name where TensorRT kept the network's name, else with
    the one ONNX tensor that leaves the nodes its metadata names (consumed outside them, or a graph
    output), unless one of those nodes is also named by a later layer (still being computed) or
    reads a tensor only a later layer computes (TensorRT moved it: a Q commuted across a MaxPool).
    Cheap nodes (a DequantizeLinear) may be named by several layers: each recomputes them."""
    g = model.graph
    constant = {t.name for t in g.initializer}
    weight_nodes = set()
    for node in g.node:
        if node.op_type == "Constant" or all(i in constant for i in node.input if i):
            constant.update(node.output)
            weight_nodes.add(node.name)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    by_name = {n.name: n for n in g.node}
    last = {name: i for i, layer in enumerate(layers) for name in layer.nodes}
    first = {name: i for i, layer in reversed(list(enumerate(layers))) for name in layer.nodes}
    boundaries: list[Boundary] = []
    unscaled: list[str] = []

    def quantized(q: Any) -> tuple[str, float] | None:
        """(the DequantizeLinear output after ``q``, ``q``'s scale) for a per-tensor Q."""
        dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
        scale = _scalar(model, q.input[1]) if len(q.input) > 1 else None
        return (dq.output[0], scale) if dq is not None and scale is not None else None

    for i, layer in enumerate(layers):
        if len(layer.outputs) != 1:
            continue
        internal, datatype = layer.outputs[0]
        names = [n for n in layer.nodes if n in by_name and n not in weight_nodes]
        if internal in producers and internal not in constant:
            leaving = [internal]
        elif names:
            inside = set(layer.nodes)
            leaving = [t for n in names for t in by_name[n].output if t and t not in constant and
                       (t in graph_outputs or any(c.name not in inside for c in consumers.get(t, [])))]
            if any(last.get(producers[t].name, i) > i for t in leaving):
                continue  # a node of this layer is finished by a later one: its output is partial here
            if any(first.get(producers[t].name, -1) > i for n in names for t in by_name[n].input
                   if t in producers and t not in constant and producers[t].name not in inside):
                continue  # a node moved ahead of its input's producer (a Q commuted across MaxPool)
        else:
            continue
        if _is_int8(datatype):
            qs = [producers[t] for t in leaving if producers[t].op_type == "QuantizeLinear"]
            if not qs and len(leaving) == 1:  # a Q TensorRT moved across this layer (MaxPool on INT8)
                qs = [c for c in consumers.get(leaving[0], []) if c.op_type == "QuantizeLinear"]
            found = quantized(qs[0]) if len(qs) == 1 else None
            if found is None:
                unscaled.append(internal)
            else:
                boundaries.append(Boundary(internal, found[0], i, found[1]))
            continue
        floats = [t for t in leaving if producers[t].op_type != "QuantizeLinear"]
        if len(floats) == 1:
            boundaries.append(Boundary(internal, floats[0], i))
    return boundaries, unscaled


def _layer_divergence(model: Any, layer: EngineLayer, b: Boundary, rel: float, tolerance: float) -> Divergence:
    """The fused layer named by its ONNX nodes (topological order, weight paths out), its first
    computing node (not a Q/DQ, cast or ReLU) and their torch modules."""
    from ..export._modules import module_of, read_node_modules

    table = read_node_modules(_onnx.metadata(model))
    inits = {t.name for t in model.graph.initializer}
    named = set(layer.nodes)
    order = [n for n in model.graph.node if n.name in named and not all(i in inits for i in n.input if i)]
    main = next((n for n in order if n.op_type not in _PASS_THROUGH), None)
    if main is not None:
        node, module = main.name, module_of(main, table, inits)
    else:
        node, module = _module_for(model, b.onnx_tensor)
    modules = list(dict.fromkeys(m for m in (module_of(n, table, inits) for n in order
                                             if n.op_type not in _PASS_THROUGH) if m != "?"))
    return Divergence(b.onnx_tensor, node, module, rel, tolerance, layer=layer.name,
                      layer_nodes=[n.name for n in order], layer_modules=modules or [module], debug_tensor=b.debug_tensor)


def compare_debug_tensors(model: Any, layers: list[EngineLayer], got: dict[str, np.ndarray],
                          want: dict[str, np.ndarray], tolerance: float,
                          boundaries: list[Boundary], unscaled: list[str]) -> tuple[Divergence | None, str | None, int]:
    """(the first fused layer beyond ``tolerance``, a note on what was not compared, how many were)."""
    compared, worst = 0, (0.0, "")
    for b in boundaries:
        if b.debug_tensor not in got or b.onnx_tensor not in want:
            continue
        a = np.asarray(got[b.debug_tensor], np.float64) * (b.scale if b.scale is not None else 1.0)
        ref = np.asarray(want[b.onnx_tensor], np.float64)
        if a.size != ref.size:
            continue  # e.g. channels padded to a vector width
        compared += 1
        rel = _rel_err(a.reshape(ref.shape), ref)
        worst = max(worst, (rel, b.onnx_tensor))
        if rel > tolerance:
            return _layer_divergence(model, layers[b.layer], b, rel, tolerance), None, compared
    parts = []
    if unscaled:
        parts.append(f"{len(unscaled)} INT8 debug tensor(s) left out: no per-tensor QuantizeLinear scale to "
                     f"dequantize them with (e.g. {unscaled[0]})")
    if compared:
        log.info("no fused layer exceeds %.3g; the largest relative error is %.3g at %s", tolerance, *worst)
    return None, "; ".join(parts) or None, compared


def plan_divergence(plan: Artifact, reference: Path, x: np.ndarray, tolerance: float) -> Explanation:
    """For a TensorRT plan (10.12+): rebuild the variant's ONNX with its unfused tensors marked as
    debug tensors (fusion kept, unlike marking outputs) at ``ProfilingVerbosity.DETAILED``, run it
    on ``x`` collecting them, map them to ONNX tensors through the engine inspector's layer
    information and compare each with ONNX Runtime's CPU value. When too few can be mapped, the
    explanation is the Polygraphy command, with a note saying why."""
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
            info = tensorrt_session.layer_information()
    model = _onnx.load(reference)
    names = _activations(model)
    layers = engine_layers(info) if info is not None else []
    described = (f"{len(layers)} engine layers described" if any(layer.nodes for layer in layers)
                 else "the engine inspector gave no layer metadata naming ONNX nodes")
    boundaries, unscaled = map_debug_tensors(model, layers)
    wanted = {b.onnx_tensor for b in boundaries if b.debug_tensor in got} | {n for n in got if n in names}
    want = _run_exposed(reference, {n: names[n] for n in names if n in wanted}, x)
    if not boundaries:  # no layer information: where TensorRT kept network names (the outputs' say nothing new)
        outputs = {o.name for o in model.graph.output}
        boundaries = [Boundary(n, n, -1) for n in names if n in got and n not in outputs]
        layers = [EngineLayer(b.debug_tensor, (), ()) for b in boundaries]
        boundaries = [Boundary(b.debug_tensor, b.onnx_tensor, i) for i, b in enumerate(boundaries)]
    found, note, compared = compare_debug_tensors(model, layers, got, want, tolerance, boundaries, unscaled)
    if found is not None:
        return Explanation(found, note=note)
    nodes = {n.name for n in model.graph.node}
    candidates = sum(1 for layer in layers if any(n in nodes for n in layer.nodes)) or len(layers)
    if compared == 0 or compared < _MIN_MAPPED_FRACTION * candidates:
        why = (f"only {compared} of the {len(got)} debug tensors TensorRT reported could be matched to ONNX tensors "
               f"({described})")
        note = "; ".join(p for p in (why, note) if p)
        return Explanation(hint=_plan_hint(reference, tolerance, record), note=note)
    return Explanation(note=note)


def _plan_hint(reference: Path, tolerance: float, record: dict[str, Any]) -> str:
    return polygraphy_command(reference, Tolerance(0.0, 0.0, tolerance), record.get("recipe", {}))


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
        why = plan_divergence(art, variant_onnx, x[worst], tol.layer_rel_err)
        if why.note:
            log.warning("%s: %s", art.name, why.note)
        return why
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
