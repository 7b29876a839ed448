"""``resdeploy quantize``: FP16, and INT8 by post-training calibration for a target, with an
accuracy budget met by giving the most sensitive layers back to higher precision."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection
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
from ..stats import Z95
from . import _auto, _calib, _qdq

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
    calib_method: str = "auto"  # or one of _calib.METHODS
    calib_batch: int = 32
    seed: int = 0
    val: str | None = None
    max_drop: float | None = None  # percentage points of top-1
    val_limit: int | None = None
    sensitivity_images: int = 256
    layer_images: int = 64  # images of the per-layer SQNR report (the first of --val, else held-out --calib ones)
    fp32_remainder: bool = False  # tensorrt target: keep unquantized layers FP32 instead of FP16

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision!r}: use fp16 or int8")
        if self.target not in TARGETS:
            raise UsageError(f"--target {self.target!r}: use tensorrt or cpu")
        if self.calib_method not in (_calib.AUTO, *_calib.METHODS):
            raise UsageError(f"--calib-method {self.calib_method!r}: use one of {', '.join((_calib.AUTO, *_calib.METHODS))}")
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
    layers_sample: str = ""  # which images the per-layer report was computed on, in words

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


def _drop_interval(b: int, c: int, n: int) -> tuple[float, float]:
    """95% interval of the paired top-1 drop (percentage points): Agresti and Min's adjusted Wald
    interval (half an image added to each discordant cell), which keeps its coverage when the two
    models disagree on few images."""
    bb, cc, nn = b + 0.5, c + 0.5, n + 2.0
    d = (bb - cc) / nn
    var = max(((bb + cc) - (bb - cc) ** 2 / nn) / (nn * nn), 0.0)
    half = Z95 * math.sqrt(var)
    return (100.0 * (d - half), 100.0 * (d + half))


def _images_needed(b: int, c: int, n: int, max_drop: float) -> int | None:
    """Validation images for the drop's interval to fall under ``max_drop`` at the discordance and
    drop measured (None where the measured drop is itself over the budget)."""
    d, room = (b - c) / max(n, 1), max_drop / 100.0 - (b - c) / max(n, 1)
    if room <= 0 or d * 100.0 > max_drop:
        return None
    disc = (b + c + 1.0) / max(n, 1)
    return math.ceil(Z95 * Z95 * disc / (room * room))


class _Validator:
    """Top-1 of candidate models on the validation set, against the FP32 model's top-1."""

    def __init__(self, fp32: onnx.ModelProto, dataset: Dataset, pre: Preprocess, limit: int | None, name: str) -> None:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        self.labels = dataset.labels[:n]
        self.name = name
        self.data = dataset.name
        self.xs = [x for x, _ in dataset.batches(pre, 250, np.arange(n))]
        self.fp32_logits = _top1_logits(fp32, self.xs, name)
        self.fp32_correct = self.fp32_logits.argmax(1) == self.labels
        self.fp32_top1 = float(np.mean(self.fp32_correct))

    def measure(self, model: onnx.ModelProto) -> dict[str, Any]:
        """Top-1, the drop against FP32 with its 95% interval, agreement with FP32's top-1 and the
        mean squared logit error (the last two vary far less from image set to image set)."""
        logits = _top1_logits(model, self.xs, self.name)
        pred = logits.argmax(1)
        correct = pred == self.labels
        b = int(np.sum(self.fp32_correct & ~correct))
        c = int(np.sum(~self.fp32_correct & correct))
        n = len(self.labels)
        return {"top1": float(np.mean(correct)), "drop_pp": 100.0 * (b - c) / max(n, 1),
                "drop_ci95_pp": list(_drop_interval(b, c, n)), "only_fp32": b, "only_int8": c,
                "agreement": float(np.mean(pred == self.fp32_logits.argmax(1))),
                "logit_mse": float(np.mean((logits.astype(np.float64) - self.fp32_logits) ** 2))}

    def drop_pp(self, model: onnx.ModelProto) -> tuple[float, float]:
        """(top-1, drop in percentage points)."""
        m = self.measure(model)
        return m["top1"], m["drop_pp"]

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


class _Int8Builder:
    """INT8 models of the FP32 model for one target from one set of statistics: any method's
    thresholds, any fallback set, never a second pass over the calibration images."""

    def __init__(self, inp: _Inputs, config: QuantizeConfig, units: list[_qdq.Unit], sample: dict[str, np.ndarray]) -> None:
        self.inp, self.config, self.units, self.sample = inp, config, units, sample
        self._cpu_base: dict[tuple[str, ...], onnx.ModelProto] = {}

    def build(self, stats: dict[str, _calib.TensorStats], method: str, excluded: Collection[str] = (), *,
              fp16_remainder: bool | None = None, folded: bool = False, final: bool = True) -> onnx.ModelProto:
        """The INT8 model; ``folded`` (tensorrt target): its numerically identical twin with the
        weights' Q/DQ precomputed, which ONNX Runtime runs faster (for measurements only); not
        ``final`` (cpu target): ranges patched into one quantizer output (for measurements only)."""
        if self.config.target == "cpu":
            from ._cpu import quantize_cpu, with_ranges

            key = tuple(sorted(excluded))
            act = _calib.ranges(stats, method)
            if key not in self._cpu_base and not final:  # the quantizer once per fallback set, ranges patched in
                self._cpu_base[key] = quantize_cpu(self.inp.fp32, self.sample, act, key)
            if final:  # the quantizer's own output for these ranges
                return quantize_cpu(self.inp.fp32, self.sample, act, key)
            return with_ranges(self._cpu_base[key], act, self.inp.fp32)
        fp16 = not self.config.fp32_remainder if fp16_remainder is None else fp16_remainder
        kept = [u for u in self.units if u.node not in excluded]
        return _qdq.write_qdq(self.inp.fp32, kept, _calib.thresholds(stats, method), fp16_remainder=fp16,
                              folded_weights=folded)


def _quantize_int8(inp: _Inputs, config: QuantizeConfig, report: QuantizeReport) -> onnx.ModelProto:
    """Calibrate (one pass), choose the method (``auto``), write Q/DQ for the target, then meet
    --max-drop by falling back layers, reusing the same statistics throughout."""
    assert config.calib is not None
    calib_ds = load_dataset(config.calib, default_split="train")
    cpre = _dataset_inputs(calib_ds, inp.pre, inp.fp32, inp.src)
    batches = calibration_batches(calib_ds, cpre, input_name=inp.name, size=config.calib_size,
                                  batch_size=config.calib_batch, seed=config.seed)
    images = sum(len(b[inp.name]) for b in batches)
    report.calib = {"data": calib_ds.name, "images": images,
                    "method": config.calib_method, "seed": config.seed, "batch": config.calib_batch}
    units = _qdq.find_units(inp.fp32)
    report.units = len(units)
    if config.target == "cpu":
        from ._cpu import activation_tensors

        tensors = activation_tensors(inp.fp32)
    else:
        tensors = sorted({u.tensor for u in units})
    auto = config.calib_method == _calib.AUTO
    shape = batches[0][inp.name].shape
    holdout = _calib.holdout_size(images, int(np.prod(shape[2:])))
    from ._sqnr import unit_outputs

    report_on_holdout = config.val is None and holdout > 0
    stats = _calib.collect(inp.fp32, tensors, batches, holdout=holdout, desc="calibrate",
                           keep=unit_outputs(inp.fp32, units) if report_on_holdout else ())
    builder = _Int8Builder(inp, config, units, batches[0])
    method = config.calib_method
    if auto:
        if stats.holdout:
            method, scores = _auto.choose(
                _calib.METHODS, lambda m: builder.build(stats.fit, m, fp16_remainder=False, folded=True, final=False), stats.holdout,
                np.concatenate(stats.holdout_outputs))
            report.calib["auto"] = {"chosen": method, "per": "model", "holdout_images": stats.holdout_images,
                                    "scored_by": "mean per-image logit SQNR against FP32 on the held-out calibration images",
                                    "scores": scores}
        else:
            method = "mse"
            report.calib["auto"] = {"chosen": method, "per": "model", "holdout_images": 0,
                                    "scored_by": "too few calibration images to hold any out (< 32): mse"}
    report.calib["chosen"] = method
    all_stats = stats.all()

    def rebuild(excluded: set[str]) -> onnx.ModelProto:
        return builder.build(all_stats, method, excluded)

    model = rebuild(set())
    validator = _validator(inp, config) if config.val is not None else None
    if validator is not None and config.max_drop is not None:
        thresholds = _calib.thresholds({t: all_stats[t] for t in {u.tensor for u in units}}, method)
        model, report.fallback, report.budget = _meet_budget(
            inp.fp32, model, units, thresholds, rebuild, config, validator)
    elif validator is not None:
        m = validator.measure(model)
        report.budget = {"data": validator.data, "n": len(validator.labels), "fp32_top1": validator.fp32_top1,
                         **m, "max_drop_pp": None}
    if report_on_holdout:
        _layer_report(inp, model, units, report, stats.held_chunks, config.layer_images,
                      f"{{n}} calibration images of {calib_ds.name} held out from the threshold fit", calib_ds.name,
                      stats.held_kept)
    elif validator is not None:
        _layer_report(inp, model, units, report, validator.xs, config.layer_images,
                      f"the first {{n}} images of {validator.data} (--val)", validator.data)
    else:
        _layer_report(inp, model, units, report, [b[inp.name] for b in batches], config.layer_images,
                      f"the first {{n}} calibration images of {calib_ds.name}", calib_ds.name)
    return model


def _layer_report(inp: _Inputs, model: onnx.ModelProto, units: list[_qdq.Unit], report: QuantizeReport,
                  source: list[np.ndarray], images: int, what: str, data: str,
                  reference: list[dict[str, np.ndarray]] | None = None) -> None:
    """Per-layer SQNR against FP32 on the first ``images`` images of ``source`` (``reference``:
    the FP32 tensors on them, where the calibration pass kept them)."""
    from ._sqnr import layer_sqnr

    batches, left = [], images
    for x in source:
        if left <= 0:
            break
        batches.append(x[:left])
        left -= len(batches[-1])
    if reference is not None:
        reference = reference[:len(batches)]
        reference = [{k: v[:len(b)] for k, v in r.items()} for r, b in zip(reference, batches, strict=True)]
    report.layers = layer_sqnr(inp.fp32, model, units, batches, report.fallback, reference)
    report.layers_images = sum(len(b) for b in batches)
    report.layers_data = data
    report.layers_sample = what.format(n=report.layers_images)


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


def _fallback_sizes(n: int) -> list[int]:
    """Layers given back per round: 0, 1, 2, 4, ... and finally all ``n``."""
    sizes, k = [0], 1
    while k < n:
        sizes.append(k)
        k *= 2
    return [*sizes, n] if n else sizes


def _meet_budget(
    fp32: onnx.ModelProto,
    model: onnx.ModelProto,
    units: list[_qdq.Unit],
    thresholds: dict[str, float],
    rebuild: Rebuild,
    config: QuantizeConfig,
    validator: _Validator,
) -> tuple[onnx.ModelProto, list[str], dict[str, Any]]:
    """Give the most sensitive layers back to higher precision until the drop is shown within the
    budget: the upper end of its 95% interval at most --max-drop. Rounds add layers in sensitivity
    order (1, 2, 4, ... then all); each is judged by its agreement with FP32 (low variance) as well
    as its drop, and the best seen is kept: the model returned is the first round shown within the
    budget, and no round recorded after the best one seen is kept."""
    assert config.max_drop is not None
    n = len(validator.labels)
    base = {"data": validator.data, "n": n, "fp32_top1": validator.fp32_top1, "max_drop_pp": config.max_drop}
    history: list[dict[str, Any]] = []
    ranking: list[dict[str, Any]] = []
    ranked: list[_qdq.Unit] = []
    best: tuple[dict[str, Any], onnx.ModelProto, list[str]] | None = None
    shown = None
    for k in _fallback_sizes(len(units)):
        if k == 1 and not ranked:
            scored = validator.sensitivity(fp32, units, thresholds, config.sensitivity_images)
            ranking = [{"node": u.node, "kind": u.kind, "mse": err} for u, err in scored]
            ranked = [u for u, _ in scored]
        excluded = [u.node for u in ranked[:k]]
        if k:
            model = rebuild(set(excluded))
        m = validator.measure(model)
        row = {"fallback": k, **m}
        history.append(row)
        log.info("fallback %d layer(s): top-1 %.4f, drop %.3f pp (95%% %.3f..%.3f), agreement %.4f", k, m["top1"],
                 m["drop_pp"], *m["drop_ci95_pp"], m["agreement"])
        if best is None or (m["agreement"], -m["logit_mse"]) > (best[0]["agreement"], -best[0]["logit_mse"]):
            best = (row, model, excluded)
        if m["drop_ci95_pp"][1] <= config.max_drop:
            shown = (row, model, excluded)
            break
    assert best is not None
    if shown is None:
        row = best[0]
        b, c = row["only_fp32"], row["only_int8"]
        need = _images_needed(b, c, n, config.max_drop)
        lo, hi = row["drop_ci95_pp"]
        tried = ", ".join(str(h["fallback"]) for h in history)
        more = (f"; showing a drop within {config.max_drop} pp at that agreement needs about {need} validation images "
                f"(have {n}: raise --val-limit or give more --val data)" if need is not None and need > n else
                "; its drop itself is over the budget: keep FP16 for this model, or raise --max-drop")
        raise QuantizeError(
            f"could not show the top-1 drop within --max-drop {config.max_drop} pp on {n} images of {validator.data}: "
            f"tried {tried} of {len(units)} layers in higher precision; the best ({row['fallback']} layers) drops "
            f"{row['drop_pp']:.2f} pp (95% interval {lo:.2f} to {hi:.2f} pp), agreement with FP32 "
            f"{100 * row['agreement']:.2f} %{more}")
    row, model, excluded = shown
    if row is not best[0]:
        # The round shown within budget agrees with FP32 less than an earlier one that was not:
        # record that the kept model is this one, so the last round is the one kept.
        history.append({**row, "kept": True})
    budget = {**base, **{k: v for k, v in row.items() if k != "fallback"}, "history": history, "sensitivity": ranking,
              "shown_within_budget": True}
    return model, excluded, budget
