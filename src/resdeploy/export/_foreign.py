"""An FP32 ONNX from another tool (plain ``torch.onnx.export``, timm, a training framework):
any input name, opset 13-21, a fixed or symbolic batch, BatchNormalization left in. resdeploy
takes it as its own FP32 export once the preprocessing is said (``--input-size/--mean/--std``):
BatchNormalization folded into the convolutions (running statistics), a fixed batch made
symbolic where the graph allows it, verified against the file as given in ONNX Runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _onnx
from ..errors import UsageError
from . import _fold, _verify

if TYPE_CHECKING:
    import onnx

__all__ = ["OPSETS", "AdoptResult", "adopt_fp32", "constants_as_initializers", "default_opset"]

log = logging.getLogger(__name__)

OPSETS = range(13, 22)  # what resdeploy reads from other tools: per-channel Q/DQ needs 13


@dataclass
class AdoptResult:
    model: onnx.ModelProto
    bn_folded: int
    bn_remaining: int
    batch_made_dynamic: bool
    checks: list[_verify.Check]


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _symbolic_batch(model: onnx.ModelProto) -> None:
    """Input and output batch dimensions symbolic (``batch``); intermediate shapes dropped, to be
    inferred again."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]


def adopt_fp32(model: onnx.ModelProto, path: str | Path, *, seed: int = 0) -> AdoptResult:
    """``model`` (read from ``path``) as resdeploy's FP32 ONNX: one image input, one logits output,
    BatchNormalization folded, a symbolic batch; verified against the model as given. A model
    resdeploy cannot serve is a one-line error naming what was found."""
    import onnx

    _onnx.check_classifier(model, path)
    opset = default_opset(model)
    if opset not in OPSETS:
        raise UsageError(f"{path} is opset {opset}; resdeploy reads opset {OPSETS.start}-{OPSETS.stop - 1} (per-channel "
                         "Q/DQ needs 13): export it again with opset_version=17")
    original = onnx.ModelProto()
    original.CopyFrom(model)
    reset = _fold.set_inference_mode(original)
    if reset:
        log.info("%s: %d training-mode BatchNormalization node(s) set to running statistics", path, reset)
    adopted = onnx.ModelProto()
    adopted.CopyFrom(original)
    constants_as_initializers(adopted)
    folded = _fold.fold_bn_onnx(adopted) if any(n.op_type == "BatchNormalization" for n in adopted.graph.node) else None
    static = _onnx.image_input(adopted)[1][0]
    if static is not None:
        _symbolic_batch(adopted)
    shape = _onnx.image_input(adopted, path)[1]
    reference = _in_steps(_verify.onnx_reference(original), static or 0)
    what = f"{Path(path).name} with BatchNormalization folded"
    if static is None:
        checks = _verify.compare(adopted, reference, input_shape=shape[1:], batches=(1, 4), seed=seed, what=what)
    else:
        try:  # at a batch the file as given does not take: does anything in the graph depend on it?
            checks = _verify.compare(adopted, reference, input_shape=shape[1:], batches=(static, static + 1),
                                     seed=seed, what=what)
        except Exception as exc:
            raise UsageError(
                f"{path} has a fixed batch of {static} that its graph depends on (e.g. a Reshape to [{static}, ...]); "
                "export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={name: {0: 'batch'}}))"
            ) from exc
        log.info("%s: fixed batch %d made symbolic (verified at batch %d)", path, static, static + 1)
    return AdoptResult(adopted, folded.folded if folded else 0, folded.remaining if folded else 0,
                       static is not None, checks)


def constants_as_initializers(model: onnx.ModelProto) -> None:
    """Weights the way folding reads them: ``Constant`` nodes become initializers, and an
    ``Identity`` of an initializer (torch's exporter shares equal weights that way, e.g. every
    fresh BatchNorm's ones and zeros) is replaced by the initializer itself."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    alias: dict[str, str] = {}
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value" \
                and node.output[0] not in outputs:
            t = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            g.initializer.append(t)
            inits.add(t.name)
            continue
        source = alias.get(node.input[0], node.input[0]) if node.input else ""
        if node.op_type == "Identity" and source in inits and node.output[0] not in outputs:
            alias[node.output[0]] = source
            continue
        keep.append(node)
    if len(keep) == len(g.node):
        return
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del g.node[:]
    g.node.extend(keep)


def _in_steps(run: Callable[[np.ndarray], np.ndarray], static: int) -> Callable[[np.ndarray], np.ndarray]:
    """``run`` over any batch, ``static`` images at a time (the last call padded) when the model as
    given takes nothing else."""
    if not static:
        return run

    def stepped(x: np.ndarray) -> np.ndarray:
        pad = (-len(x)) % static
        padded = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
        return np.concatenate([run(padded[i:i + static]) for i in range(0, len(padded), static)])[: len(x)]

    return stepped
