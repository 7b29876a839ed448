"""Batch-norm folding, at the torch level (FX) and at the ONNX level (for foreign graphs)."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx
    import torch

log = logging.getLogger(__name__)


def count_batchnorms(module: torch.nn.Module) -> int:
    import torch

    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _conv_bn_pairs(module: torch.nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) qualified names where a Conv's output feeds only that BatchNorm, found by an
    FX trace of ``module``; the module itself is not changed."""
    import torch
    from torch import fx

    graph = fx.symbolic_trace(module).graph
    mods = dict(module.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), torch.nn.modules.batchnorm._BatchNorm):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and isinstance(mods.get(src.target), torch.nn.modules.conv._ConvNd)):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _set_submodule(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def fold_bn_module(module: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """Fold every Conv -> BatchNorm pair into the Conv, in a copy whose module tree is the
    original's (the BN becomes an ``Identity``), so the exported ONNX keeps the torch scope in
    its node names (``/layer3/layer3.0/conv2/Conv``) and weight names.

    Modules FX cannot trace (TorchScript, data-dependent control flow) are returned unchanged
    with 0 folded; the ONNX-level pass then folds what the exporter left.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if count_batchnorms(module) == 0 or isinstance(module, torch.jit.ScriptModule):
        return module, 0
    try:
        pairs = _conv_bn_pairs(module)
    except Exception as exc:  # noqa: BLE001 - FX tracing failures come in many types
        log.info("torch-level BN folding skipped: the model is not FX-traceable (%s)", type(exc).__name__)
        return module, 0
    folded = copy.deepcopy(module)
    for conv_name, bn_name in pairs:
        conv: Any = folded.get_submodule(conv_name)
        bn: Any = folded.get_submodule(bn_name)
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, bn_name, torch.nn.Identity())
    return folded, len(pairs)


@dataclass(frozen=True)
class OnnxFoldResult:
    folded: int
    remaining: int


def fold_bn_onnx(model: onnx.ModelProto) -> OnnxFoldResult:
    """Fold ``Conv -> BatchNormalization`` pairs in place, with inference (running-stat) semantics.

    A pair is folded when the Conv output feeds only that BN, the BN's extra (training)
    outputs are unused, and every parameter is an initializer. New initializers get fresh
    names so that weights shared elsewhere are not altered.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in graph.node for out in node.output}
    graph_outputs = {o.name for o in graph.output}

    folded = 0
    removed: list[onnx.NodeProto] = []
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization":
            continue
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv":
            continue
        if len(consumers.get(conv.output[0], [])) != 1 or conv.output[0] in graph_outputs:
            continue
        if any(o and (consumers.get(o) or o in graph_outputs) for o in bn.output[1:]):
            continue
        params = list(bn.input[1:5])
        if not all(p in inits for p in params) or conv.input[1] not in inits:
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in params)
        w = numpy_helper.to_array(inits[conv.input[1]])
        b = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros(w.shape[0])
        )
        scale = gamma / np.sqrt(var + eps)
        new_w = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b - mean) * scale + beta).astype(w.dtype)
        w_name, b_name = f"{conv.name or conv.output[0]}.folded_weight", f"{conv.name or conv.output[0]}.folded_bias"
        graph.initializer.append(numpy_helper.from_array(new_w, w_name))
        graph.initializer.append(numpy_helper.from_array(new_b, b_name))
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        conv.output[0] = bn.output[0]
        removed.append(bn)
        folded += 1
    for node in removed:
        graph.node.remove(node)
    _drop_unused_initializers(model)
    remaining = sum(n.op_type == "BatchNormalization" for n in graph.node)
    return OnnxFoldResult(folded=folded, remaining=remaining)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    dropped = {t.name for t in model.graph.initializer} - {t.name for t in keep}
    if dropped:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        graph_inputs = [i for i in model.graph.input if i.name not in dropped]
        del model.graph.input[:]
        model.graph.input.extend(graph_inputs)


def set_inference_mode(model: onnx.ModelProto) -> int:
    """Make training-mode BatchNormalization nodes use running statistics; returns how many."""
    changed = 0
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        for attr in list(node.attribute):
            if attr.name == "training_mode" and attr.i:
                node.attribute.remove(attr)
                changed += 1
        del node.output[1:]
    return changed
