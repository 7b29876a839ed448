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

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})


@dataclass(frozen=True)
class Unit:
    """One quantizable layer: a Conv (input activation + weights) or a residual Add (identity input)."""

    node: str
    kind: str  # "conv" | "residual"
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


def write_qdq(
    model: onnx.ModelProto,
    units: Iterable[Unit],
    thresholds: Mapping[str, float],
    *,
    fp16_remainder: bool = True,
) -> onnx.ModelProto:
    """A new model with Q/DQ for ``units`` (the others stay in floating point)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    by_node = {u.node: u for u in units}
    new_inits: list[onnx.TensorProto] = []
    qdq_for: dict[str, str] = {}  # activation tensor -> its dequantized name
    nodes: list[onnx.NodeProto] = []

    def activation_qdq(tensor: str) -> str:
        if tensor not in qdq_for:
            scale = max(float(thresholds[tensor]), 1e-8) / 127.0
            s, z = f"{tensor}_scale", f"{tensor}_zero_point"
            new_inits.extend([_scalar(s, float(np.float32(scale)), TensorProto.FLOAT), _scalar(z, 0, TensorProto.INT8)])
            q, dq = f"{tensor}_QuantizeLinear", f"{tensor}_DequantizeLinear"
            nodes.append(helper.make_node("QuantizeLinear", [tensor, s, z], [q + "_Output"], name=q))
            nodes.append(helper.make_node("DequantizeLinear", [q + "_Output", s, z], [dq + "_Output"], name=dq))
            qdq_for[tensor] = dq + "_Output"
        return qdq_for[tensor]

    for node in g.node:
        unit = by_node.get(node.name)
        if unit is not None and unit.kind == "conv":
            node.input[0] = activation_qdq(node.input[0])
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            scale = (np.maximum(absmax, 1e-8) / 127.0).astype(np.float32)
            base = f"{node.name}_weight"
            wname, s, z = f"{base}", f"{base}_scale", f"{base}_zero_point"
            new_inits += [
                numpy_helper.from_array(w, wname),
                numpy_helper.from_array(scale, s),
                numpy_helper.from_array(np.zeros(w.shape[0], dtype=np.int8), z),
            ]
            nodes.append(helper.make_node("QuantizeLinear", [wname, s, z], [f"{base}_quantized"], name=f"{base}_QuantizeLinear", axis=0))
            nodes.append(helper.make_node("DequantizeLinear", [f"{base}_quantized", s, z], [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=0))
            node.input[1] = f"{base}_dequantized"
        elif unit is not None and unit.kind == "residual":
            idx = list(node.input).index(unit.tensor)
            node.input[idx] = activation_qdq(unit.tensor)
        nodes.append(node)

    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
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


def to_fp16(model: onnx.ModelProto, extra_block: Iterable[str] = (), block_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """FP16 for every node but the blocked op types and nodes; graph inputs and outputs stay FP32.

    Float initialisers read by converted nodes become FP16 copies; a Cast is inserted once per
    tensor where FP32 enters the converted region and where FP16 leaves it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    blocked_ops = {*FP16_BLOCK_LIST, *extra_block}
    blocked = set(block_nodes)
    region = {n.name for n in g.node if n.op_type not in blocked_ops and n.name not in blocked}
    inferred = onnx.shape_inference.infer_shapes(out)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *g.input, *g.output]}
    inits = {t.name: t for t in g.initializer}
    graph_outputs = {o.name for o in g.output}

    def is_float(name: str) -> bool:
        if name in inits:
            return inits[name].data_type == TensorProto.FLOAT
        return elem.get(name) == TensorProto.FLOAT

    new_nodes: list[onnx.NodeProto] = []
    fp16_init: dict[str, str] = {}
    to16: dict[str, str] = {}
    to32: dict[str, str] = {}
    converted_outputs: set[str] = set()

    def cast(src: str, dst: str, to: int) -> None:
        new_nodes.append(helper.make_node("Cast", [src], [dst], name=f"{dst}_Cast", to=to))

    for node in g.node:
        if node.name in region:
            for i, name in enumerate(node.input):
                if not name or not is_float(name):
                    continue
                if name in inits:
                    if name not in fp16_init:
                        arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                        fp16_init[name] = f"{name}_fp16"
                        g.initializer.append(numpy_helper.from_array(arr, fp16_init[name]))
                    node.input[i] = fp16_init[name]
                elif name not in converted_outputs:
                    if name not in to16:
                        to16[name] = f"{name}_fp16"
                        cast(name, to16[name], TensorProto.FLOAT16)
                    node.input[i] = to16[name]
            converted_outputs.update(o for o in node.output if is_float(o))
            for attr in node.attribute:  # Cast nodes that produce float now produce FP16
                if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
        else:
            for i, name in enumerate(node.input):
                if name in converted_outputs:
                    if name not in to32:
                        to32[name] = f"{name}_fp32"
                        cast(name, to32[name], TensorProto.FLOAT)
                    node.input[i] = to32[name]
        new_nodes.append(node)
    # Graph outputs produced in FP16 are renamed, then cast back under their own name.
    for out_name in graph_outputs & converted_outputs:
        inner = f"{out_name}_fp16_out"
        for n in new_nodes:
            n.output[:] = [inner if o == out_name else o for o in n.output]
            n.input[:] = [inner if i == out_name else i for i in n.input]
        cast(inner, out_name, TensorProto.FLOAT)
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    return out
