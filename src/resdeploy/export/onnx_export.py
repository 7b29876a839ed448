"""torch -> ONNX: BN folded at the torch level, opset 17, dynamic batch, onnxsim, verified."""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, _io, _onnx
from ..errors import ExportError, UsageError
from ..models import LoadedModel
from . import _fold, _foreign, _modules, _verify

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``resdeploy export``; the CLI takes its defaults from here."""

    opset: int = 17
    batch: int | None = None  # None: dynamic batch dimension
    fold_bn: bool = True
    simplify: bool = True
    verify_batches: tuple[int, ...] = (1, 4)
    tolerance: float = _verify.FP32_RELATIVE_TOLERANCE
    seed: int = 0

    def __post_init__(self) -> None:
        if not 11 <= self.opset <= 21:
            raise UsageError(f"--opset {self.opset} is outside 11..21; TensorRT 8.6 reads up to 17 (the default)")
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be 'dynamic' or a positive integer, got {self.batch}")


@dataclass
class ExportResult:
    path: Path
    nodes_exported: int
    nodes_final: int
    bn_in_model: int
    bn_folded_torch: int
    bn_folded_onnx: int
    simplified: bool
    checks: list[_verify.Check]
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def max_abs_err(self) -> float:
        return max(c.max_abs_err for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "nodes_exported": self.nodes_exported,
            "nodes_final": self.nodes_final,
            "bn_in_model": self.bn_in_model,
            "bn_folded_torch": self.bn_folded_torch,
            "bn_folded_onnx": self.bn_folded_onnx,
            "simplified": self.simplified,
            "checks": [c.to_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
        }


def _torch_to_onnx(module: Any, input_shape: tuple[int, ...], config: ExportConfig) -> onnx.ModelProto:
    import onnx
    import torch

    # The exporter folds BN itself in eval mode; to keep BN (--no-fold-bn) it must trace in
    # training mode (batch >= 2), after which the BN nodes are reset to running statistics.
    keep_bn = not config.fold_bn
    if keep_bn and config.batch == 1:
        raise UsageError("--no-fold-bn needs a dynamic batch or --batch 2 or more; drop --batch 1")
    if keep_bn:  # a training-mode trace would update running statistics: freeze them on a copy
        module = copy.deepcopy(module)
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0
    example = torch.zeros(config.batch or (2 if keep_bn else 1), *input_shape)
    dynamic = None if config.batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    mode = torch.onnx.TrainingMode.TRAINING if keep_bn else torch.onnx.TrainingMode.EVAL
    # torch >= 2.5 has `dynamo` (and from 2.9 defaults to it); older torch (JetPack 6.0's 2.3)
    # has no such parameter and is TorchScript-based already: pass it only where it exists.
    extra: dict[str, Any] = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buf = io.BytesIO()
    # The TorchScript-based exporter: it takes TorchScript modules too, targets an exact opset
    # (TensorRT 8.6 needs <= 17) and is fast; torch marks it deprecated, hence the filter.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                buf,  # type: ignore[arg-type]  # file-like objects are accepted
                opset_version=config.opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                do_constant_folding=not keep_bn,
                training=mode,
                **extra,
            )
        except Exception as exc:
            raise ExportError(
                f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}; "
                "rerun with --debug for the traceback"
            ) from exc
    proto = onnx.load_from_string(buf.getvalue())
    if keep_bn:
        _fold.set_inference_mode(proto)
    return proto


def _simplify(model: onnx.ModelProto, *, keep_bn: bool) -> onnx.ModelProto:
    # ONNX Runtime first: onnxsim that cannot import it runs `pip install onnxruntime` itself, then fails alike.
    import onnxruntime  # noqa: F401
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model, skip_fuse_bn=keep_bn)
    except Exception as exc:
        raise ExportError(f"onnxsim failed ({exc}); retry with --no-simplify") from exc
    if not ok:
        raise ExportError("onnxsim's own check failed; retry with --no-simplify")
    return simplified


def _run_onnx_checker(proto: onnx.ModelProto) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the ONNX checker rejected the export: {str(exc).splitlines()[0]}") from exc


def _export_metadata(model: LoadedModel, config: ExportConfig, proto: onnx.ModelProto, bn_folded: int,
                     checks: list[_verify.Check]) -> dict[str, str]:
    """Preprocessing, source, precision and the node -> module map, for every later stage."""
    known = {name for name, _ in model.module.named_modules() if name}
    return {
        **model.spec.to_metadata(),
        **model.preprocess.to_metadata(),
        "resdeploy.num_classes": str(model.num_classes),
        "resdeploy.precision": "fp32",
        "resdeploy.version": __version__,
        "resdeploy.export": json.dumps({
            "opset": config.opset,
            "batch": config.batch or "dynamic",
            "bn_folded": bn_folded,
            "max_abs_err": max(c.max_abs_err for c in checks),
        }),
        _modules.META_KEY: json.dumps(_modules.node_modules(proto, known), sort_keys=True),
    }


def export_onnx(model: LoadedModel, output: str | Path, config: ExportConfig = ExportConfig()) -> ExportResult:
    """Export, fold, simplify, check and verify; write ``output`` only if all of it passed."""
    start = time.perf_counter()
    out = _io.check_writable(output)
    static = model.extra.get("static_batch")
    if static and config.batch != static:
        raise UsageError(f"{model.description} runs at batch {static} only (exported with a static batch); "
                         f"pass --batch {static}, or export it again with a dynamic batch dimension")
    pre = model.preprocess
    reference = _verify.torch_reference(model.module)
    module, folded_torch = _fold.fold_bn_module(model.module) if config.fold_bn else (model.module, 0)
    if folded_torch:
        log.info("folded %d BatchNorm layers into their convolutions (torch)", folded_torch)
    proto = _torch_to_onnx(module, pre.input_shape, config)
    nodes_exported = len(proto.graph.node)
    folded_onnx = 0
    if config.fold_bn and any(n.op_type == "BatchNormalization" for n in proto.graph.node):
        folded_onnx = _fold.fold_bn_onnx(proto).folded
    if config.simplify:
        proto = _simplify(proto, keep_bn=not config.fold_bn)
    _run_onnx_checker(proto)
    batches = (config.batch,) if config.batch else config.verify_batches
    checks = _verify.compare(
        proto, reference, input_shape=pre.input_shape, batches=batches, tolerance=config.tolerance,
        seed=config.seed, what="the exported ONNX",
    )
    meta = _export_metadata(model, config, proto, folded_torch + folded_onnx, checks)
    _onnx.set_metadata(proto, meta)
    proto.producer_name, proto.producer_version = "resdeploy", __version__
    _io.write_bytes(out, _onnx.serialize(proto))
    return ExportResult(
        path=out, nodes_exported=nodes_exported, nodes_final=len(proto.graph.node),
        bn_in_model=_fold.count_batchnorms(model.module), bn_folded_torch=folded_torch, bn_folded_onnx=folded_onnx,
        simplified=config.simplify, checks=checks, seconds=time.perf_counter() - start, metadata=meta,
    )


@dataclass
class FoldResult:
    path: Path
    folded: int
    remaining: int
    training_mode_reset: int
    checks: list[_verify.Check]


def fold_bn_file(src: str | Path, output: str | Path, *, seed: int = 0) -> FoldResult:
    """``resdeploy fold-bn``: fold Conv -> BatchNormalization pairs of an existing ONNX."""
    out = _io.check_writable(output)
    proto = _onnx.load(src)
    reference_model = type(proto)()
    reference_model.CopyFrom(proto)
    reset = _fold.set_inference_mode(reference_model)
    _fold.set_inference_mode(proto)
    _foreign.constants_as_initializers(proto)  # BN parameters torch's exporter shares through Identity nodes
    result = _fold.fold_bn_onnx(proto)
    if result.folded == 0 and result.remaining == 0:
        log.info("%s holds no BatchNormalization; writing it unchanged", src)
    shape = _onnx.image_input(proto)[1]
    batches = (1, 4) if shape[0] is None else (shape[0],)
    checks = _verify.compare(
        proto, _verify.onnx_reference(reference_model), input_shape=shape[1:], batches=batches, seed=seed,
        what="the folded ONNX",
    )
    _io.write_bytes(out, _onnx.serialize(proto))
    return FoldResult(out, result.folded, result.remaining, reset, checks)
