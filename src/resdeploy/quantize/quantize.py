"""``resdeploy quantize``: FP16, and INT8 by post-training calibration for a target, with an
accuracy budget met by giving the most sensitive layers back to higher precision."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .. import __version__, _io, _onnx, _progress
from ..data import Dataset, calibration_batches, load_dataset
from ..errors import DataSpecError, QuantizeError, UsageError
from ..export import _verify
from ..preprocess import GivenPreprocess, Preprocess
from . import _calib, _qdq

log = logging.getLogger(__name__)

FP16_RELATIVE_TOLERANCE = 1e-2  # FP16 vs FP32 on seeded inputs, of the largest logit
PRECISIONS = ("fp16", "int8")
TARGETS = ("tensorrt", "cpu")


@dataclass(frozen=True)
class QuantizeConfig:
    """Options of ``resdeploy quantize``; the CLI takes its defaults from here."""

    precision: str = "int8"
    target: str = "tensorrt"
    calib: str | None = None
    calib_size: int = 512
    calib_method: str = "mse"
    calib_batch: int = 32
    seed: int = 0
    val: str | None = None
    max_drop: float | None = None  # percentage points of top-1
    val_limit: int | None = None
    sensitivity_images: int = 256
    layer_images: int = 256  # images of the per-layer SQNR report (the first of --val, else of --calib)
    fp32_remainder: bool = False  # tensorrt target: keep unquantized layers FP32 instead of FP16

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision!r}: use fp16 or int8")
        if self.target not in TARGETS:
            raise UsageError(f"--target {self.target!r}: use tensorrt or cpu")
        if self.calib_method not in _calib.METHODS:
            raise UsageError(f"--calib-method {self.calib_method!r}: use one of {', '.join(_calib.METHODS)}")
        if self.precision == "int8" and not self.calib:
            raise UsageError("--precision int8 needs calibration images: add --calib DATA (e.g. fashion-mnist:train)")
        if self.calib_size < 1:
            raise UsageError(f"--calib-size must be at least 1, got {self.calib_size}")
        if self.max_drop is not None and self.val is None:
            raise UsageError("--max-drop needs validation data: add --val DATA (e.g. fashion-mnist:test)")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError(f"--max-drop is in percentage points and cannot be negative, got {self.max_drop}")


@dataclass
class QuantizeReport:
    path: str
    precision: str
    target: str
    seconds: float
    calib: dict[str, Any] = field(default_factory=dict)
    units: int = 0
    fallback: list[str] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)  # per quantized layer: SQNR against FP32
    layers_images: int = 0
    layers_data: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report_path(output: str | Path) -> Path:
    p = Path(output)
    return p.with_name(p.stem + ".quant.json")


def _load_fp32(src: str | Path, given: GivenPreprocess | None = None) -> tuple[onnx.ModelProto, Preprocess | None]:
    """The FP32 model and its preprocessing: resdeploy's export as written, or an ONNX from
    another tool taken in (BatchNormalization folded, batch symbolic) with the preprocessing
    ``given`` on the command line written into its metadata."""
    from ..export import adopt_fp32

    model = _onnx.load(src)
    if _qdq.is_quantized(model):
        raise UsageError(f"{src} is already quantized (it holds Q/DQ or integer ops); quantize the FP32 export instead")
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        raise UsageError(f"{src} is already FP16; quantize the FP32 export instead")
    meta = _onnx.metadata(model)
    pre = Preprocess.from_metadata(meta)
    given = given or GivenPreprocess()
    if pre is not None:
        given.check(pre, str(src))
    static = _onnx.image_input(model, src)[1][0]
    if pre is None or (static is not None and "resdeploy.source" not in meta) or any(
            n.op_type == "BatchNormalization" for n in model.graph.node):
        model = adopt_fp32(model, src).model
    if pre is None and given:
        pre = given.for_input(_onnx.image_input(model)[1][1:], str(src))
        outputs = model.graph.output[0].type.tensor_type.shape.dim
        extra = {"resdeploy.num_classes": str(outputs[-1].dim_value)} if outputs and outputs[-1].dim_value else {}
        _onnx.set_metadata(model, {**pre.to_metadata(), **extra, "resdeploy.precision": "fp32",
                                   "resdeploy.source": str(Path(src).resolve())})
    _qdq.name_nodes(model)
    return model, pre


def _dataset_inputs(dataset: Dataset, pre: Preprocess | None, model: onnx.ModelProto, src: str | Path) -> Preprocess:
    """The preprocessing for ``dataset``, checked against the model's input shape."""
    shape = _onnx.image_input(model)[1][1:]
    if pre is None:
        if not dataset.preprocessed:
            raise UsageError(
                f"{src} has no resdeploy preprocessing metadata; say how to preprocess images for it with "
                "--mean/--std (and --input-size), export it with `resdeploy export`, or give already preprocessed "
                "data as an .npz"
            )
        pre = Preprocess(input_size=(shape[1], shape[2]), mean=(0.0,), std=(1.0,), channels=shape[0])
    if dataset.tensors is not None and tuple(dataset.tensors.shape[1:]) != shape:
        raise DataSpecError(
            f"{dataset.name} holds inputs of shape {tuple(dataset.tensors.shape[1:])} but the model takes {shape}; "
            "preprocess the data for this model"
        )
    return pre


def _top1_logits(model: onnx.ModelProto, xs: list[np.ndarray], name: str) -> np.ndarray:
    sess = _onnx.session(model)
    return np.concatenate([sess.run(None, {name: x})[0] for x in xs])


def _verify_fp16(fp32: onnx.ModelProto, fp16: onnx.ModelProto, pre_shape: tuple[int, ...]) -> dict[str, Any]:
    checks = _verify.compare(
        fp16, _verify.onnx_reference(fp32), input_shape=pre_shape, batches=(1, 4),
        tolerance=FP16_RELATIVE_TOLERANCE, what="the FP16 model",
    )
    return {"against": "fp32 onnx, seeded inputs", "checks": [c.to_dict() for c in checks]}


class _Validator:
    """Top-1 of candidate models on the validation set, against the FP32 model's top-1."""

    def __init__(self, fp32: onnx.ModelProto, dataset: Dataset, pre: Preprocess, limit: int | None, name: str) -> None:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        self.labels = dataset.labels[:n]
        self.name = name
        self.data = dataset.name
        self.xs = [x for x, _ in dataset.batches(pre, 250, np.arange(n))]
        self.fp32_logits = _top1_logits(fp32, self.xs, name)
        self.fp32_top1 = float(np.mean(self.fp32_logits.argmax(1) == self.labels))

    def drop_pp(self, model: onnx.ModelProto) -> tuple[float, float]:
        """(top-1, drop in percentage points)."""
        top1 = float(np.mean(_top1_logits(model, self.xs, self.name).argmax(1) == self.labels))
        return top1, 100.0 * (self.fp32_top1 - top1)

    def sensitivity(self, fp32: onnx.ModelProto, units: list[_qdq.Unit], thresholds: dict[str, float], images: int) -> list[tuple[_qdq.Unit, float]]:
        """Each unit quantized alone: mean squared logit error against FP32 on ``images`` images."""
        budget, xs = images, []
        for x in self.xs:
            xs.append(x[:budget])
            budget -= len(xs[-1])
            if budget <= 0:
                break
        ref = self.fp32_logits[: sum(len(x) for x in xs)]
        scores = []
        for unit in _progress.track(units, total=len(units), desc="layer sensitivity", unit="layer"):
            single = _qdq.write_qdq(fp32, [unit], thresholds, fp16_remainder=False)
            err = float(np.mean((_top1_logits(single, xs, self.name) - ref) ** 2))
            scores.append((unit, err))
        return sorted(scores, key=lambda s: (-s[1], s[0].node))


Rebuild = Callable[[set[str]], onnx.ModelProto]


@dataclass
class _Inputs:
    """What both paths share: the FP32 model, its preprocessing and input name, the source."""

    src: str | Path
    fp32: onnx.ModelProto
    pre: Preprocess | None
    name: str


def _validator(inp: _Inputs, config: QuantizeConfig) -> _Validator:
    assert config.val is not None
    val = load_dataset(config.val, default_split="test")
    return _Validator(inp.fp32, val, _dataset_inputs(val, inp.pre, inp.fp32, inp.src), config.val_limit, inp.name)


def _quantize_fp16(inp: _Inputs, config: QuantizeConfig, report: QuantizeReport) -> onnx.ModelProto:
    """FP16 weights and activations, IO kept FP32, verified on seeded inputs (and top-1 with --val)."""
    model = _qdq.to_fp16(inp.fp32)
    report.verify = _verify_fp16(inp.fp32, model, _onnx.image_input(inp.fp32)[1][1:])
    if config.val:
        validator = _validator(inp, config)
        top1, drop = validator.drop_pp(model)
        report.budget = {"data": validator.data, "n": len(validator.labels), "fp32_top1": validator.fp32_top1,
                         "top1": top1, "drop_pp": drop, "max_drop_pp": config.max_drop}
        if config.max_drop is not None and drop > config.max_drop:
            raise QuantizeError(f"FP16 drops top-1 by {drop:.3f} pp, over --max-drop {config.max_drop}; keep FP32 for this model")
    return model


def _quantize_int8(inp: _Inputs, config: QuantizeConfig, report: QuantizeReport) -> onnx.ModelProto:
    """Calibrate, write Q/DQ for the target, then meet --max-drop by falling back layers."""
    assert config.calib is not None
    calib_ds = load_dataset(config.calib, default_split="train")
    cpre = _dataset_inputs(calib_ds, inp.pre, inp.fp32, inp.src)
    batches = calibration_batches(calib_ds, cpre, input_name=inp.name, size=config.calib_size,
                                  batch_size=config.calib_batch, seed=config.seed)
    report.calib = {"data": calib_ds.name, "images": sum(len(b[inp.name]) for b in batches),
                    "method": config.calib_method, "seed": config.seed, "batch": config.calib_batch}
    units = _qdq.find_units(inp.fp32)
    report.units = len(units)
    tensors = sorted({u.tensor for u in units})
    thresholds = _calib.calibrate(inp.fp32, tensors, batches, config.calib_method, total=len(batches)) \
        if config.target == "tensorrt" else {}

    def rebuild(excluded: set[str]) -> onnx.ModelProto:
        if config.target == "cpu":
            from ._cpu import quantize_cpu

            return quantize_cpu(inp.fp32, batches, config.calib_method, sorted(excluded))
        kept = [u for u in units if u.node not in excluded]
        return _qdq.write_qdq(inp.fp32, kept, thresholds, fp16_remainder=not config.fp32_remainder)

    model = rebuild(set())
    validator = _validator(inp, config) if config.val is not None else None
    if validator is not None and config.max_drop is not None:
        if not thresholds:  # cpu target: the ranking still needs per-tensor ranges
            thresholds = _calib.calibrate(inp.fp32, tensors, batches, config.calib_method)
        model, report.fallback, report.budget = _meet_budget(
            inp.fp32, model, units, thresholds, rebuild, config, validator)
    elif validator is not None:
        top1, drop = validator.drop_pp(model)
        report.budget = {"data": validator.data, "n": len(validator.labels), "fp32_top1": validator.fp32_top1,
                         "top1": top1, "drop_pp": drop, "max_drop_pp": None}
    _layer_report(inp, model, units, report, validator, [b[inp.name] for b in batches], config.layer_images)
    return model


def _layer_report(inp: _Inputs, model: onnx.ModelProto, units: list[_qdq.Unit], report: QuantizeReport,
                  validator: _Validator | None, calib: list[np.ndarray], images: int) -> None:
    """Per-layer SQNR against FP32 on the first ``images`` validation images (else calibration images)."""
    from ._sqnr import layer_sqnr

    source = validator.xs if validator is not None else calib
    batches, left = [], images
    for x in source:
        if left <= 0:
            break
        batches.append(x[:left])
        left -= len(batches[-1])
    report.layers = layer_sqnr(inp.fp32, model, units, batches, report.fallback)
    report.layers_images = sum(len(b) for b in batches)
    report.layers_data = validator.data if validator is not None else report.calib.get("data", "")


def quantize(src: str | Path, output: str | Path, config: QuantizeConfig, *,
             input_size: int | tuple[int, int] | None = None, mean: tuple[float, ...] | None = None,
             std: tuple[float, ...] | None = None) -> QuantizeReport:
    """Quantize ``src`` into ``output`` (and a JSON report beside it); nothing is written on failure.
    ``input_size``/``mean``/``std`` say how to preprocess for an ONNX from another tool (one
    without resdeploy's metadata); they are written into the output's metadata."""
    start = time.perf_counter()
    out = _io.check_writable(output)
    fp32, pre = _load_fp32(src, GivenPreprocess(input_size, mean, std))
    inp = _Inputs(src, fp32, pre, _onnx.image_input(fp32)[0])
    report = QuantizeReport(path=str(out), precision=config.precision, target=config.target, seconds=0.0)
    meta = _onnx.metadata(fp32)
    model = _quantize_fp16(inp, config, report) if config.precision == "fp16" else _quantize_int8(inp, config, report)
    meta.update({
        "resdeploy.precision": config.precision,
        "resdeploy.target": config.target,
        "resdeploy.version": __version__,
        "resdeploy.quantize": json.dumps({k: v for k, v in report.to_dict().items() if k in ("calib", "fallback", "budget")}, sort_keys=True),
    })
    _onnx.set_metadata(model, meta)
    model.producer_name, model.producer_version = "resdeploy", __version__
    report.ops = {k: v for k, v in sorted(_onnx.count_ops(model).items())}
    data = _onnx.serialize(model)
    report.seconds = round(time.perf_counter() - start, 2)
    _io.write_bytes(out, data)
    _io.write_json(report_path(out), report.to_dict())
    return report


def _meet_budget(
    fp32: onnx.ModelProto,
    model: onnx.ModelProto,
    units: list[_qdq.Unit],
    thresholds: dict[str, float],
    rebuild: Rebuild,
    config: QuantizeConfig,
    validator: _Validator,
) -> tuple[onnx.ModelProto, list[str], dict[str, Any]]:
    """Give the most sensitive layers back to higher precision until the drop fits."""
    assert config.max_drop is not None
    top1, drop = validator.drop_pp(model)
    history = [{"fallback": 0, "top1": top1, "drop_pp": drop}]
    log.info("INT8 top-1 %.4f, drop %.3f pp (budget %.3f pp)", top1, drop, config.max_drop)
    excluded: list[str] = []
    ranking: list[dict[str, Any]] = []
    if drop > config.max_drop:
        scored = validator.sensitivity(fp32, units, thresholds, config.sensitivity_images)
        ranking = [{"node": u.node, "kind": u.kind, "mse": err} for u, err in scored]
        ranked = [u for u, _ in scored]
        step = 1
        while drop > config.max_drop and len(excluded) < len(ranked):
            excluded = [u.node for u in ranked[: len(excluded) + step]]
            model = rebuild(set(excluded))
            top1, drop = validator.drop_pp(model)
            history.append({"fallback": len(excluded), "top1": top1, "drop_pp": drop})
            log.info("fell back %d layer(s): top-1 %.4f, drop %.3f pp", len(excluded), top1, drop)
            step *= 2
    budget = {"data": validator.data, "n": len(validator.labels), "fp32_top1": validator.fp32_top1, "top1": top1,
              "drop_pp": drop, "max_drop_pp": config.max_drop, "history": history, "sensitivity": ranking}
    if drop > config.max_drop:
        raise QuantizeError(
            f"could not meet --max-drop {config.max_drop} pp: {drop:.3f} pp even with {len(excluded)} of "
            f"{len(units)} layers in higher precision; try another --calib-method, more --calib-size, or FP16"
        )
    return model, excluded, budget
