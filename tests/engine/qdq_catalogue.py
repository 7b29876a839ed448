"""Small Q/DQ ONNX files, one per thing an ONNX parser of TensorRT's lineage may refuse: a
3x3 Conv over an (N, 3, 8, 8) input with its input and weight quantized, varied one way each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

# kind -> what it varies (each differs from "symmetric-int8" in one way)
KINDS = {
    "symmetric-int8": "int8 Q/DQ, zero point 0, float bias: what TensorRT's guide asks for",
    "non-zero-zero-point": "the input's zero point is 3 (asymmetric)",
    "uint8-zero-point": "uint8 Q/DQ with zero point 0",
    "no-zero-point": "QuantizeLinear without a zero point (uint8 at opset 17)",
    "int32-bias": "the bias dequantized from int32 (ONNX Runtime's QuantizeBias)",
    "int8-initialiser": "the weight stored as int8 and fed straight to a DequantizeLinear",
    "qlinearconv": "ONNX Runtime's QOperator format (QLinearConv)",
}


def _qlinearconv() -> onnx.ModelProto:
    w = np.ones((4, 3, 3, 3), np.int8)
    inits = [nh.from_array(w, "w"), nh.from_array(np.array(0.05, np.float32), "s"),
             nh.from_array(np.array(0, np.int8), "zp"), nh.from_array(np.full(4, 0.01, np.float32), "ws"),
             nh.from_array(np.zeros(4, np.int8), "wzp")]
    nodes = [h.make_node("QuantizeLinear", ["input", "s", "zp"], ["xq"], name="input_QuantizeLinear"),
             h.make_node("QLinearConv", ["xq", "s", "zp", "w", "ws", "wzp", "s", "zp"], ["yq"], pads=[1, 1, 1, 1],
                         name="/conv1/QLinearConv"),
             h.make_node("DequantizeLinear", ["yq", "s", "zp"], ["y"], name="output_DequantizeLinear")]
    return _model(nodes, inits)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "qdq", [h.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def make(kind: str) -> onnx.ModelProto:
    if kind == "qlinearconv":
        return _qlinearconv()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    ws = (np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32)
    zp_type = np.uint8 if kind == "uint8-zero-point" else np.int8
    inits = [nh.from_array(w, "w"), nh.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             nh.from_array(np.array(0.05, np.float32), "s"), nh.from_array(ws, "ws"),
             nh.from_array(np.zeros(4, np.int8), "wzp"),
             nh.from_array(np.array(3 if kind == "non-zero-zero-point" else 0, zp_type), "zp")]
    zp = [] if kind == "no-zero-point" else ["zp"]
    nodes = [h.make_node("QuantizeLinear", ["input", "s", *zp], ["xq"], name="input_QuantizeLinear"),
             h.make_node("DequantizeLinear", ["xq", "s", *zp], ["xd"], name="input_DequantizeLinear")]
    if kind == "int8-initialiser":
        inits.append(nh.from_array(np.round(w / ws[:, None, None, None]).astype(np.int8), "wq"))
    else:
        nodes.append(h.make_node("QuantizeLinear", ["w", "ws", "wzp"], ["wq"], axis=0, name="w_QuantizeLinear"))
    nodes.append(h.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0, name="w_DequantizeLinear"))
    bias = "b"
    if kind == "int32-bias":
        bs = (0.05 * ws).astype(np.float32)
        inits += [nh.from_array(np.round(rng.standard_normal(4) / bs).astype(np.int32), "bq"), nh.from_array(bs, "bs"),
                  nh.from_array(np.zeros(4, np.int32), "bzp")]
        nodes.append(h.make_node("DequantizeLinear", ["bq", "bs", "bzp"], ["bd"], axis=0, name="conv1.bias_DequantizeLinear"))
        bias = "bd"
    nodes.append(h.make_node("Conv", ["xd", "wd", bias], ["y"], pads=[1, 1, 1, 1], name="/conv1/Conv"))
    return _model(nodes, inits)


def write_all(folder: Path) -> dict[str, Path]:
    paths = {}
    for kind in KINDS:
        paths[kind] = folder / f"{kind}.onnx"
        onnx.save(make(kind), paths[kind])
    return paths
