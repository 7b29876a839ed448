"""Explicit Q/DQ for TensorRT: symmetric INT8, weights as float initialisers through a
per-channel Q/DQ pair (axis 0), biases left float, a Q/DQ on the identity input of every
residual Add, the unquantized remainder optionally cast to FP16. Opset 17 throughout.

The placement follows TensorRT's developer guide ("Q/DQ layer-placement recommendations"):
quantize the inputs of Conv, never its output, and the residual input of an Add, so that
Conv + Add (+ ReLU) fuse into one INT8 kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})


@dataclass(frozen=True)
class Unit:
    """One quantizable layer: a Conv (input activation + weights) or a residual Add (identity input)."""

    node: str
    kind: str  # "conv" | "residual" (or "pool": an input of MaxPool or GlobalAveragePool)
    tensor: str  # the activation tensor quantized for it


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique, stable name (units and fallbacks refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def find_units(model: onnx.ModelProto) -> list[Unit]:
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    units = []
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            units.append(Unit(node.name, "conv", node.input[0]))
        elif node.op_type == "Add" and len(node.input) == 2 and not any(i in inits for i in node.input):
            a, b = node.input
            pa, pb = producers.get(a), producers.get(b)
            if pa is None or pb is None:
                continue
            a_conv, b_conv = pa.op_type == "Conv", pb.op_type == "Conv"
            if a_conv and not b_conv:
                identity = b
            elif b_conv and not a_conv:
                identity = a
            elif a_conv and b_conv:
                # Downsample block: the shortcut conv reads the block input, which the main
                # branch's first conv reads too.
                identity = a if consumers.get(pa.input[0], 0) > 1 and consumers.get(pb.input[0], 0) <= 1 else b
            else:
                identity = b
            units.append(Unit(node.name, "residual", identity))
    return units


def _scalar(name: str, value: float | int, dtype: int) -> onnx.TensorProto:
    return helper.make_tensor(name, dtype, [], [value])


# Generated names, in one place (as ModelOpt's qdq_utils does): tensor -> its Q/DQ pieces.
def _scale_name(tensor: str) -> str:
    return f"{tensor}_scale"


def _zero_point_name(tensor: str) -> str:
    return f"{tensor}_zero_point"


def _q_name(tensor: str) -> str:
    return f"{tensor}_QuantizeLinear"


def _dq_name(tensor: str) -> str:
    return f"{tensor}_DequantizeLinear"


def _dq_out_name(tensor: str) -> str:
    return f"{_dq_name(tensor)}_Output"


def _weight_name(node: str) -> str:
    return f"{node}_weight"


class _QdqWriter:
    """Collects the Q/DQ nodes and initialisers of one rewrite."""

    def __init__(self, thresholds: Mapping[str, float], initializers: Mapping[str, onnx.TensorProto]) -> None:
        self.thresholds, self.inits = thresholds, initializers
        self.new_inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.done: dict[str, str] = {}  # activation tensor -> its dequantized name

    def _pair(self, tensor: str, source: str, axis: int | None) -> str:
        s, z = _scale_name(tensor), _zero_point_name(tensor)
        kw: dict[str, Any] = {} if axis is None else {"axis": axis}
        q_out = f"{_q_name(tensor)}_Output"
        self.nodes.append(helper.make_node("QuantizeLinear", [source, s, z], [q_out], name=_q_name(tensor), **kw))
        self.nodes.append(helper.make_node("DequantizeLinear", [q_out, s, z], [_dq_out_name(tensor)],
                                           name=_dq_name(tensor), **kw))
        return _dq_out_name(tensor)

    def activation(self, tensor: str) -> str:
        """Per-tensor symmetric Q/DQ with an explicit int8 zero-point (TensorRT rejects uint8)."""
        if tensor not in self.done:
            scale = float(np.float32(max(float(self.thresholds[tensor]), 1e-8) / 127.0))
            self.new_inits += [_scalar(_scale_name(tensor), scale, TensorProto.FLOAT),
                               _scalar(_zero_point_name(tensor), 0, TensorProto.INT8)]
            self.done[tensor] = self._pair(tensor, tensor, None)
        return self.done[tensor]

    def weight(self, node: onnx.NodeProto, folded: bool = False) -> str:
        """Float weights -> Q -> DQ, per output channel (axis 0); TensorRT 8.x's parser rejects a
        DQ fed directly by an int8 initialiser. ``folded``: the same values, Q -> DQ computed here
        (round half to even, as QuantizeLinear) and stored as a float initialiser: a numerically
        identical twin that ONNX Runtime runs faster, for measurements only."""
        w = numpy_helper.to_array(self.inits[node.input[1]]).astype(np.float32)
        scale = (np.maximum(np.abs(w.reshape(w.shape[0], -1)).max(axis=1), 1e-8) / 127.0).astype(np.float32)
        base = _weight_name(node.name)
        if folded:
            shape = (-1,) + (1,) * (w.ndim - 1)
            q = np.clip(np.round(w / scale.reshape(shape)), -128, 127)
            self.new_inits.append(numpy_helper.from_array((q * scale.reshape(shape)).astype(np.float32), _dq_out_name(base)))
            return _dq_out_name(base)
        self.new_inits += [numpy_helper.from_array(w, base), numpy_helper.from_array(scale, _scale_name(base)),
                           numpy_helper.from_array(np.zeros(w.shape[0], dtype=np.int8), _zero_point_name(base))]
        return self._pair(base, base, 0)


def write_qdq(
    model: onnx.ModelProto,
    units: Iterable[Unit],
    thresholds: Mapping[str, float],
    *,
    fp16_remainder: bool = True,
    folded_weights: bool = False,
) -> onnx.ModelProto:
    """A new model with Q/DQ for ``units`` (the others stay in floating point). ``folded_weights``
    writes each weight's Q/DQ as its float result (see ``_QdqWriter.weight``): for measuring only."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    by_node = {u.node: u for u in units}
    w = _QdqWriter(thresholds, {t.name: t for t in g.initializer})
    for node in g.node:
        unit = by_node.get(node.name)
        if unit is not None and unit.kind == "conv":
            node.input[0] = w.activation(node.input[0])
            node.input[1] = w.weight(node, folded_weights)
        elif unit is not None:  # a residual Add's identity input (or another op's activation input)
            idx = list(node.input).index(unit.tensor)
            node.input[idx] = w.activation(unit.tensor)
        w.nodes.append(node)
    del g.node[:]
    g.node.extend(w.nodes)
    g.initializer.extend(w.new_inits)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    if fp16_remainder:
        out = to_fp16(out, extra_block=("QuantizeLinear", "DequantizeLinear"), block_nodes=_int8_region(out, by_node))
    return out


def _int8_region(model: onnx.ModelProto, units: Mapping[str, Unit]) -> list[str]:
    """Nodes kept FP32-typed around the INT8 kernels: the quantized Convs and residual Adds
    (so they read DequantizeLinear outputs directly, the patterns TensorRT fuses) and the
    ReLU / MaxPool chains that follow them into the next QuantizeLinear. The rest (fallen-back
    layers, pooling head, classifier) is the FP16 remainder."""
    blocked = set(units)
    producers = {o: n.name for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("Relu", "MaxPool") and any(producers.get(i) in blocked for i in node.input):
            blocked.add(node.name)
    return sorted(blocked)


# Numerically sensitive ops kept in FP32 by the FP16 conversion, on top of ONNX Runtime's own
# list (ops without FP16 kernels). None of them occurs in a torchvision ResNet; they matter for
# users' own heads (softmax, normalisation, exponentials, large reductions).
FP16_BLOCK_LIST = (
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div",
    "ReduceMean", "ReduceSum", "ReduceL2", "ReduceLogSumExp",
    "LayerNormalization", "InstanceNormalization", "BatchNormalization", "Erf", "Resize", "TopK",
)


class _Fp16Rewriter:
    """Rewrites nodes into FP16, inserting one Cast per tensor where FP32 enters the converted
    region and where FP16 leaves it."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        inferred = onnx.shape_inference.infer_shapes(model)
        self.elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *g.input, *g.output]}
        self.inits = {t.name: t for t in g.initializer}
        self.graph = g
        self.nodes: list[onnx.NodeProto] = []
        self.fp16_init: dict[str, str] = {}
        self.to16: dict[str, str] = {}
        self.to32: dict[str, str] = {}
        self.converted: set[str] = set()  # tensors now produced in FP16

    def is_float(self, name: str) -> bool:
        if name in self.inits:
            return self.inits[name].data_type == TensorProto.FLOAT
        return self.elem.get(name) == TensorProto.FLOAT

    def cast(self, src: str, dst: str, to: int) -> None:
        self.nodes.append(helper.make_node("Cast", [src], [dst], name=f"{dst}_Cast", to=to))

    def convert(self, node: onnx.NodeProto) -> None:
        for i, name in enumerate(node.input):
            if not name or not self.is_float(name):
                continue
            if name in self.inits:
                if name not in self.fp16_init:
                    arr = numpy_helper.to_array(self.inits[name]).astype(np.float16)
                    self.fp16_init[name] = f"{name}_fp16"
                    self.graph.initializer.append(numpy_helper.from_array(arr, self.fp16_init[name]))
                node.input[i] = self.fp16_init[name]
            elif name not in self.converted:
                if name not in self.to16:
                    self.to16[name] = f"{name}_fp16"
                    self.cast(name, self.to16[name], TensorProto.FLOAT16)
                node.input[i] = self.to16[name]
        self.converted.update(o for o in node.output if self.is_float(o))
        for attr in node.attribute:  # Cast nodes that produce float now produce FP16
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
        self.nodes.append(node)

    def keep(self, node: onnx.NodeProto) -> None:
        for i, name in enumerate(node.input):
            if name in self.converted:
                if name not in self.to32:
                    self.to32[name] = f"{name}_fp32"
                    self.cast(name, self.to32[name], TensorProto.FLOAT)
                node.input[i] = self.to32[name]
        self.nodes.append(node)

    def finish(self) -> None:
        """Graph outputs produced in FP16 are renamed, then cast back under their own name."""
        for out_name in {o.name for o in self.graph.output} & self.converted:
            inner = f"{out_name}_fp16_out"
            for n in self.nodes:
                n.output[:] = [inner if o == out_name else o for o in n.output]
                n.input[:] = [inner if i == out_name else i for i in n.input]
            self.cast(inner, out_name, TensorProto.FLOAT)
        g = self.graph
        del g.node[:]
        g.node.extend(self.nodes)
        used = {i for n in g.node for i in n.input}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        del g.value_info[:]


def to_fp16(model: onnx.ModelProto, extra_block: Iterable[str] = (), block_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """FP16 for every node but the blocked op types and nodes; graph inputs and outputs stay FP32.

    Float initialisers read by converted nodes become FP16 copies; a Cast is inserted once per
    tensor where FP32 enters the converted region and where FP16 leaves it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    blocked_ops = {*FP16_BLOCK_LIST, *extra_block}
    blocked = set(block_nodes)
    rewriter = _Fp16Rewriter(out)
    for node in list(out.graph.node):
        if node.op_type not in blocked_ops and node.name not in blocked:
            rewriter.convert(node)
        else:
            rewriter.keep(node)
    rewriter.finish()
    return out
