"""What a TensorRT or TensorRT-RTX ONNX parser cannot read, checked by resdeploy itself before any
parser sees the file (so the message is the same with or without NVIDIA's libraries installed).

Rules, each seen in NVIDIA's parser or documented by it (TENSORRT.md):
- a cpu-profile INT8 (``resdeploy quantize --target cpu``: uint8 activations, int32 biases) is
  quantized for ONNX Runtime on the CPU, never for TensorRT;
- Q/DQ zero points must be 0 ("Non-zero zero point is not supported"; TensorRT-RTX 1.7.1);
- a DequantizeLinear of an int32 initialiser (ONNX Runtime's ``QuantizeBias``) is refused
  ("input has type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8"; onnx-tensorrt #850);
- TensorRT (8.6/10.x/11.x) reads int8 Q/DQ only: a uint8 one (or a QuantizeLinear without a zero
  point, uint8 by default at opset 17) is refused; TensorRT-RTX 1.7.1's parser read both;
- TensorRT 8.6: a DequantizeLinear fed directly by an int8 initialiser ("only activation types
  allowed as input to this layer", onnxruntime #14229); later parsers read it;
- ONNX Runtime's QOperator ops (QLinearConv, ConvInteger, ...) have no TensorRT importer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .. import _onnx
from ..errors import UsageError
from .recipe import FAMILIES

__all__ = ["check_readable", "first_unreadable_node"]

QOPERATOR_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool",
                           "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})
REQUANTIZE = "re-quantize it with `resdeploy quantize --precision int8 --target tensorrt` (symmetric int8, float biases)"


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return consts


def _qdq_problem(node: onnx.NodeProto, consts: dict[str, np.ndarray], builder: str, generation: str) -> str | None:
    fed = consts.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
    if fed is not None and fed.dtype == np.int32:
        return "dequantizes an int32 initialiser (an int32-quantized bias, ONNX Runtime's QuantizeBias)"
    if fed is not None and fed.dtype == np.int8 and generation == "8.6":
        return ("is fed directly by an int8 initialiser (weights stored pre-quantized: TensorRT 8.6 allows only "
                "activation types there)")
    zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zp is not None and np.any(zp != 0):
        return "has a non-zero zero point (asymmetric quantization)"
    dtype = zp.dtype if zp is not None else (fed.dtype if fed is not None else np.dtype(np.uint8))
    if node.op_type == "DequantizeLinear" and zp is None and fed is None:
        return None  # its type is the producing QuantizeLinear's, checked there
    if dtype == np.uint8 and not FAMILIES[builder].uint8_qdq:
        return "is uint8-typed (TensorRT reads symmetric int8 Q/DQ; a QuantizeLinear without a zero point is uint8)"
    return None


def first_unreadable_node(model: onnx.ModelProto, builder: str = "tensorrt",
                          generation: str = "10") -> tuple[onnx.NodeProto, str] | None:
    """The first node (in graph order) that ``builder``'s ONNX parser of ``generation`` rejects, and why."""
    consts = _constants(model)
    for node in model.graph.node:
        if node.op_type in QOPERATOR_OPS:
            return node, "is an ONNX Runtime QOperator op with no TensorRT importer"
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            why = _qdq_problem(node, consts, builder, generation)
            if why:
                return node, why
    return None


def check_readable(model: onnx.ModelProto, path: str | Path, builder: str = "tensorrt", generation: str = "10") -> None:
    """Raise a one-line :class:`UsageError` (exit 2) when ``builder``'s parser would reject ``model``."""
    label = FAMILIES[builder].label
    meta = _onnx.metadata(model)
    if meta.get("resdeploy.target") == "cpu" and _onnx.precision(model) == "int8":
        raise UsageError(f"{path} is an INT8 ONNX quantized for the CPU (--target cpu: uint8 activations, int32 "
                         f"biases), which no {label} parser reads; {REQUANTIZE}")
    found = first_unreadable_node(model, builder, generation)
    if found is not None:
        node, why = found
        name = node.name or f"{node.op_type} -> {node.output[0]}"
        raise UsageError(f"{path}: node {name!r} ({node.op_type}) {why}, which {label}'s ONNX parser rejects; {REQUANTIZE}")
