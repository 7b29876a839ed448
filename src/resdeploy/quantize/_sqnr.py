"""Per-layer drift of an INT8 model: the SQNR of each quantized layer's output against the FP32
model's same tensor, pooled over images (10 log10(sum ref^2 / sum (ref - int8)^2)), each ONNX
node mapped back to the torch module it was exported from.

The INT8 node's output is compared with the FP32 tensor of the same name, as the next layer sees
it: where that output is quantized (QuantizeLinear -> DequantizeLinear), the DequantizeLinear's
output. ONNX Runtime's CPU quantizer removes a Conv's ReLU and gives the Conv the ReLU's tensor
name; the float tensor under that name is then the pre-activation (negative values included) and
the ReLU happens in the u8 QuantizeLinear, so only the dequantized tensor is the ReLU's output.
Activations are streamed batch by batch, never all kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import onnx

from .. import _onnx
from ..export._modules import module_of, read_node_modules
from ._qdq import Unit

__all__ = ["layer_sqnr"]

_CHUNK = 8


def layer_sqnr(
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    units: Sequence[Unit],
    batches: Iterable[np.ndarray],
    fallback: Iterable[str] = (),
    reference: Sequence[dict[str, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """``[{"node", "module", "kind", "tensor", "sqnr_db", "fallback"}]`` in network order.
    ``reference``: the FP32 tensors on each of ``batches`` where the caller has them already
    (each unit's output, by name), so the FP32 model is not run again."""
    by_name = {n.name: n for n in int8.graph.node}
    fp32_tensors = {o for n in fp32.graph.node for o in n.output}
    pairs = []  # (unit, FP32 tensor, INT8 tensor compared with it)
    for u in units:
        node = by_name.get(u.node)
        if node is not None and node.output[0] in fp32_tensors:
            pairs.append((u, node.output[0], _as_consumed(int8, node.output[0])))
    tensors = list(dict.fromkeys(t for _, t, _ in pairs))
    quantized = {t: q for _, t, q in pairs}
    # A fallen-back layer in the FP16 remainder outputs FP16: expose each tensor with its own type.
    inferred = onnx.shape_inference.infer_shapes(int8).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.output]}
    ref_sess = _onnx.session(_onnx.exposing(fp32, tensors), spin=False) if reference is None else None
    q_sess = _onnx.session(_onnx.exposing(int8, {quantized[t]: elem.get(quantized[t]) or onnx.TensorProto.FLOAT
                                                 for t in tensors}), spin=False)
    name = q_sess.get_inputs()[0].name
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    for b, batch in enumerate(batches):
        step = _CHUNK if reference is None else len(batch)
        for i in range(0, len(batch), step):  # a few images at a time: every exposed tensor is a copy
            x = batch[i:i + step]
            ref = (dict(zip(tensors, ref_sess.run(tensors, {name: x}), strict=True)) if ref_sess is not None
                   else reference[b])  # type: ignore[index]
            got = dict(zip(tensors, q_sess.run([quantized[t] for t in tensors], {name: x}), strict=True))
            for t in tensors:
                r = ref[t].reshape(-1)
                d = r - got[t].reshape(-1).astype(np.float32)
                signal[t] += float(np.dot(r, r))
                noise[t] += float(np.dot(d, d))
    table = read_node_modules(_onnx.metadata(fp32))
    inits = {t.name for t in fp32.graph.initializer}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    fell_back = set(fallback)
    return [{
        "node": u.node,
        "module": module_of(fp32_nodes[u.node], table, inits),
        "kind": u.kind,
        "tensor": t,
        "int8_tensor": q,
        "sqnr_db": round(_db(signal[t], noise[t]), 3),
        "fallback": u.node in fell_back,
    } for u, t, q in pairs]


def _as_consumed(model: onnx.ModelProto, tensor: str) -> str:
    """``tensor`` as the next layers read it: through QuantizeLinear -> DequantizeLinear when its
    only consumers quantize it, else itself."""
    consumers = [n for n in model.graph.node if tensor in n.input]
    if not consumers or any(n.op_type != "QuantizeLinear" for n in consumers):
        return tensor
    q = consumers[0]
    dq = [n for n in model.graph.node if q.output[0] in n.input and n.op_type == "DequantizeLinear"]
    return dq[0].output[0] if dq else tensor


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return 200.0  # identical: reported as 200 dB (JSON has no infinity)
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def unit_outputs(model: onnx.ModelProto, units: Sequence[Unit]) -> list[str]:
    """The FP32 tensors the report may compare: each unit node's first output, and the output of a
    ReLU reading it (ONNX Runtime's CPU quantizer gives that name to the Conv it fuses into)."""
    by_name = {n.name: n for n in model.graph.node}
    outs = [by_name[u.node].output[0] for u in units if u.node in by_name]
    wanted = set(outs)
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu" and n.input[0] in wanted]
    return list(dict.fromkeys([*outs, *relus]))
