"""One function per stage, the CLI's options as keyword arguments with the defaults the stage
configs declare (the CLI reads the same ones). Nothing is printed: the library logs to the
``resdeploy`` logger and draws progress bars only with ``progress=True``; a failure is an
exception of :mod:`resdeploy.errors`, never ``SystemExit``."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _io, _onnx, _progress
from ..data import in_memory
from ..device import verify, write_bundle
from ..engine import BuildConfig
from ..errors import DataSpecError, ModelSpecError, UsageError
from ..export import ExportConfig
from ..measure import BenchConfig, EvalConfig
from ..models import LoadedModel, ModelSpec
from ..preprocess import GivenPreprocess, Preprocess
from ..quantize import QuantizeConfig
from ..runtime.artifact import Artifact
from . import _data
from ._results import (
    BenchReport,
    BuildResult,
    BundleResult,
    EngineCommand,
    EvalReport,
    ExportResult,
    FoldResult,
    QuantizeResult,
    RunResult,
    VerifyReport,
    cast,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger("resdeploy")

__all__ = ["bench", "build_engine", "engine_command", "evaluate", "export_model", "fold_bn", "make_bundle",
           "quantize_model", "recipe_name", "run_pipeline", "verify_bundle"]

PathLike = str | os.PathLike[str]


def default(cls: type, name: str) -> Any:
    """A stage config field's default: the one place it is declared."""
    return next(f.default for f in fields(cls) if f.name == name)


def _param(func: Callable[..., Any], name: str) -> Any:
    return inspect.signature(func).parameters[name].default


def _per_channel(values: float | str | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """``mean``/``std``: one value per input channel (or one for all), as numbers or ``"R,G,B"``."""
    if values is None:
        return None
    if isinstance(values, str):
        from ..preprocess import parse_channel_values

        return parse_channel_values(values, what)
    if isinstance(values, (int, float)):
        return (float(values),)
    v = tuple(float(x) for x in values)
    if not v:
        raise UsageError(f"{what} needs one value per input channel, got none")
    return v


def _given(input_size: int | tuple[int, int] | None, mean: Any, std: Any) -> GivenPreprocess:
    return GivenPreprocess(input_size, _per_channel(mean, "mean"), _per_channel(std, "std"))


@contextlib.contextmanager
def _eval_copy(module: Any) -> Iterator[Any]:
    """The user's module in eval mode (its mode restored after), on the CPU (a copy where it is not)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ModelSpecError(f"model is a {type(module).__name__}; give a torch.nn.Module or a MODEL spec")
    if any(p.device.type != "cpu" for p in module.parameters()):
        module = copy.deepcopy(module).cpu()
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def export_model(
    model: str | os.PathLike[str] | torch.nn.Module,
    output: PathLike,
    *,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    trust_pickle: bool = False,
    opset: int = default(ExportConfig, "opset"),
    batch: int | None = default(ExportConfig, "batch"),
    fold_bn: bool = default(ExportConfig, "fold_bn"),
    simplify: bool = default(ExportConfig, "simplify"),
) -> ExportResult:
    """Export a model to a verified ONNX (BatchNorm folded, simplified, checked against torch on
    seeded inputs) whose metadata carries its preprocessing for every later stage.

    ``model`` is a ``torch.nn.Module`` held in memory (its mode is restored afterwards; ImageNet's
    mean/std and 224 px unless ``input_size``/``mean``/``std`` say otherwise) or a MODEL spec
    (``resnet50``, ``zoo:NAME``, a model file, ``package.module:factory``) with ``weights``.
    ``batch`` None is a dynamic batch dimension.
    """
    from .. import models
    from ..export import export_onnx

    config = ExportConfig(opset=opset, batch=batch, fold_bn=fold_bn, simplify=simplify)
    _io.check_writable(output)
    spec = ModelSpec(spec=os.fspath(model) if isinstance(model, (str, os.PathLike)) else "", weights=weights,
                     num_classes=num_classes, input_size=input_size,  # type: ignore[arg-type]
                     mean=_per_channel(mean, "mean"), std=_per_channel(std, "std"), trust_pickle=trust_pickle)
    if spec.spec:
        loaded = models.load_model(spec)
        result = export_onnx(loaded, Path(output), config)
    else:
        if weights:
            raise UsageError("weights go with a MODEL spec; load them into the module (load_state_dict) instead")
        with _eval_copy(model) as module:
            loaded = models.from_module(module, spec)
            if num_classes not in (None, loaded.num_classes):
                raise ModelSpecError(f"the model has {loaded.num_classes} outputs but num_classes is {num_classes}")
            result = export_onnx(loaded, Path(output), config)
    out = cast(ExportResult, result)
    out.model = loaded.description
    return out


def fold_bn(input: PathLike, output: PathLike, *, seed: int = 0) -> FoldResult:
    """Fold Conv -> BatchNormalization pairs of an existing ONNX, verified against it in ONNX Runtime."""
    from ..export import fold_bn_file

    return cast(FoldResult, fold_bn_file(Path(input), Path(output), seed=seed))


def _preprocess_of(onnx_path: PathLike, given: GivenPreprocess | None = None) -> Callable[[], Preprocess]:
    """The model's preprocessing from its metadata (or, for an ONNX from another tool, from
    ``given``), read when first needed (raw uint8 images)."""

    @functools.lru_cache(maxsize=1)
    def get() -> Preprocess:
        model = _onnx.load(onnx_path)
        pre = Preprocess.from_metadata(_onnx.metadata(model))
        if pre is None and given:
            pre = given.for_input(_onnx.image_input(model, Path(onnx_path))[1][1:], os.fspath(onnx_path))
        if pre is None:
            raise UsageError(f"{onnx_path} has no resdeploy preprocessing metadata to apply to uint8 images; export it "
                             "with resdeploy.export_model, or give preprocessed float32 images")
        return pre

    return get


def _stage_data(stack: contextlib.ExitStack, data: _data.DataLike, what: str, pre: Callable[[], Preprocess], *,
                limit: int | None, seed: int, labelled: bool, pick: bool) -> str | None:
    """A DATA spec for a stage: the user's own, or one naming their data held in memory."""
    if data is None:
        return None
    found = _data.resolve(data, what)
    if isinstance(found, str):
        return found
    if isinstance(found, _data.Stream):
        dataset, has_labels = _data.materialize(found, pre, limit=limit, seed=seed if pick else None)
    else:
        dataset, has_labels = found
    if labelled and not has_labels:
        raise DataSpecError(f"{what} needs labels: give (images, labels), a DataLoader or Dataset of "
                            "(image, label), or a labelled DATA spec")
    return stack.enter_context(in_memory(dataset))


def quantize_model(
    input: PathLike,
    output: PathLike,
    *,
    precision: str = default(QuantizeConfig, "precision"),
    target: str = default(QuantizeConfig, "target"),
    calib: _data.DataLike = None,
    calib_size: int = default(QuantizeConfig, "calib_size"),
    calib_method: str = default(QuantizeConfig, "calib_method"),
    seed: int = default(QuantizeConfig, "seed"),
    val: _data.DataLike = None,
    max_drop: float | None = default(QuantizeConfig, "max_drop"),
    val_limit: int | None = default(QuantizeConfig, "val_limit"),
    fp32_remainder: bool = default(QuantizeConfig, "fp32_remainder"),
    input_size: int | tuple[int, int] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    progress: bool = False,
) -> QuantizeResult:
    """Quantize an FP32 ONNX from :func:`export_model` to FP16, or to INT8 Q/DQ for ``target``
    (``tensorrt``: symmetric s8 in TensorRT's placement; ``cpu``: what ONNX Runtime runs fastest)
    by calibration on ``calib``; with ``val`` and ``max_drop`` (percentage points of top-1) the
    most sensitive layers go back to higher precision until the drop fits (else QuantizeError).

    ``calib`` and ``val`` are DATA specs, arrays, ``(images, labels)``, torch Datasets or
    DataLoaders, or iterables of batches: ``calib_size`` images are calibrated on (of a torch
    Dataset a seeded random choice, of a loader the first ones), ``val`` (labelled) is held in
    memory up to ``val_limit``.
    ``input_size``/``mean``/``std`` say how to preprocess for an ONNX from another tool (one
    without resdeploy's metadata; they are written into the output's).
    Writes ``output`` and ``OUT.quant.json`` (the result's ``to_dict()``).
    """
    from ..quantize import quantize

    config = QuantizeConfig(precision=precision, target=target, calib_size=calib_size, calib_method=calib_method,
                            seed=seed, max_drop=max_drop, val_limit=val_limit, fp32_remainder=fp32_remainder,
                            calib=None if calib is None else "calib",
                            val=None if val is None else "val")  # checks the options before any data is read
    given = _given(input_size, mean, std)
    pre = _preprocess_of(input, given)
    with contextlib.ExitStack() as stack, _progress.enabled(progress):
        calib_spec = None if precision == "fp16" else _stage_data(
            stack, calib, "calib", pre, limit=calib_size, seed=seed, labelled=False, pick=True)
        val_spec = _stage_data(stack, val, "val", pre, limit=val_limit, seed=seed, labelled=True, pick=False)
        return cast(QuantizeResult, quantize(Path(input), Path(output), replace(config, calib=calib_spec, val=val_spec),
                                                 input_size=given.input_size, mean=given.mean, std=given.std))


def recipe_name(label: str, generation: str) -> str:
    """"TensorRT 10" for TensorRT's generations; TensorRT-RTX has one recipe ("rtx"), named by its label alone."""
    return label if generation == "rtx" else f"{label} {generation}"


def _build_config(min_batch: int, opt_batch: int, max_batch: int, workspace: int | None, timing_cache: PathLike | None,
                  dla_core: int | None, compute_capability: Sequence[str]) -> BuildConfig:
    return BuildConfig(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, workspace_mib=workspace,
                       timing_cache=None if timing_cache is None else os.fspath(timing_cache), dla_core=dla_core,
                       compute_capabilities=tuple(compute_capability))


def build_engine(
    input: PathLike,
    output: PathLike,
    *,
    runtime: str = "auto",
    min_batch: int = default(BuildConfig, "min_batch"),
    opt_batch: int = default(BuildConfig, "opt_batch"),
    max_batch: int = default(BuildConfig, "max_batch"),
    workspace: int | None = default(BuildConfig, "workspace_mib"),
    timing_cache: PathLike | None = default(BuildConfig, "timing_cache"),
    dla_core: int | None = default(BuildConfig, "dla_core"),
    compute_capability: Sequence[str] = default(BuildConfig, "compute_capabilities"),
) -> BuildResult:
    """Build a TensorRT (``runtime="tensorrt"``, needs a GPU) or TensorRT-RTX (``"tensorrt-rtx"``,
    ahead of time without one) engine from an FP32, FP16 or TensorRT-targeted INT8 ONNX, with the
    recipe of the installed release; ``auto`` is TensorRT where importable, else TensorRT-RTX.
    Writes ``output`` and its build record ``OUT.json`` (the result's ``to_dict()``)."""
    from ..engine import build_engine as build

    config = _build_config(min_batch, opt_batch, max_batch, workspace, timing_cache, dla_core, compute_capability)
    return cast(BuildResult, build(Path(input), Path(output), config, runtime=runtime))


def _command_builder(runtime: str, trt_version: str | None) -> tuple[str, str, str]:
    """(family, version, where the version came from): ``auto`` is TensorRT where it is importable
    (or ``trt_version`` names a TensorRT release), else TensorRT-RTX."""
    from .._tensorrt import import_builder
    from ..engine import FAMILIES

    if runtime not in ("auto", *FAMILIES):
        raise UsageError(f"runtime {runtime!r}: use auto, {', '.join(FAMILIES)}")
    if runtime == "auto":
        if trt_version or import_builder("tensorrt") is not None:
            runtime = "tensorrt"
        else:
            runtime = "tensorrt-rtx" if import_builder("tensorrt_rtx") is not None else "tensorrt"
    mod = import_builder(FAMILIES[runtime].module)
    if trt_version:
        return runtime, trt_version, "given"
    if mod is not None:
        return runtime, mod.__version__, "installed"
    return runtime, "10.3" if runtime == "tensorrt" else "1.7.1", "default, none installed"


def engine_command(
    input: PathLike,
    output: PathLike,
    *,
    runtime: str = "auto",
    trt_version: str | None = None,
    min_batch: int = default(BuildConfig, "min_batch"),
    opt_batch: int = default(BuildConfig, "opt_batch"),
    max_batch: int = default(BuildConfig, "max_batch"),
    workspace: int | None = default(BuildConfig, "workspace_mib"),
    timing_cache: PathLike | None = default(BuildConfig, "timing_cache"),
    dla_core: int | None = default(BuildConfig, "dla_core"),
    compute_capability: Sequence[str] = default(BuildConfig, "compute_capabilities"),
) -> EngineCommand:
    """The trtexec (TensorRT) or tensorrt_rtx command that builds ``output`` from ``input`` with the
    recipe of release ``trt_version`` (default: the installed one, else 10.3; TensorRT-RTX 1.7.1);
    neither builder needs to be installed (``resdeploy build --print-trtexec``)."""
    from ..engine import FAMILIES, inspect_onnx, trtexec_line

    config = _build_config(min_batch, opt_batch, max_batch, workspace, timing_cache, dla_core, compute_capability)
    builder, version, source = _command_builder(runtime, trt_version)
    info = inspect_onnx(Path(input))
    line = trtexec_line(info, os.fspath(output), version, config, builder=builder)
    label = FAMILIES[builder].label
    return EngineCommand(builder=builder, label=label, version=version, version_source=source,
                         precision=info.precision, recipe=recipe_name(label, line.recipe.generation),
                         notes=list(line.recipe.notes), argv=list(line.argv), text=line.text)


class _ModuleArtifact(Artifact):
    """An FP32 reference held in memory: run by torch on a copy, never cached by identity."""

    loaded: LoadedModel

    def load_model(self) -> LoadedModel:
        module = copy.deepcopy(self.loaded.module).cpu().eval()
        return replace(self.loaded, module=module)


def _reference(reference: Any, artifacts: list[Artifact], trust_pickle: bool,
               given: GivenPreprocess | None = None) -> Artifact | None:
    if reference is None:
        return None
    if isinstance(reference, (str, os.PathLike)):
        return Artifact.resolve(os.fspath(reference), given, trust_pickle=trust_pickle)
    from ..models import classifier_outputs

    pre = artifacts[0].preprocess()
    with _eval_copy(reference) as module:
        classes, _ = classifier_outputs(module, pre)
        loaded = LoadedModel(copy.deepcopy(module), pre, classes, ModelSpec(""), f"{type(module).__name__} (in memory)")
    art = _ModuleArtifact(loaded.description, "model", _preprocess=pre)
    art.loaded = loaded
    return art


def _artifacts(artifacts: PathLike | Sequence[PathLike], trust_pickle: bool,
               given: GivenPreprocess | None = None) -> list[Artifact]:
    items = [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
    if not items:
        raise UsageError("give at least one ARTIFACT to evaluate")
    return [Artifact.resolve(os.fspath(a), given, trust_pickle=trust_pickle) for a in items]


def evaluate(
    artifacts: PathLike | Sequence[PathLike],
    data: _data.DataLike,
    *,
    reference: str | os.PathLike[str] | torch.nn.Module | None = None,
    backend: str | Sequence[str] = "auto",
    limit: int | None = default(EvalConfig, "limit"),
    eval_batch: int = default(EvalConfig, "batch_size"),
    threads: int | None = default(EvalConfig, "threads"),
    workers: int | None = default(EvalConfig, "workers"),
    trust_pickle: bool = False,
    input_size: int | tuple[int, int] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    progress: bool = False,
) -> EvalReport:
    """Top-1/top-5 (with Wilson 95% intervals) of each artifact (``.onnx``, engine, MODEL spec) on
    labelled ``data``, and its agreement with the FP32 ``reference`` (a MODEL spec, an FP32 ONNX or
    the ``torch.nn.Module`` itself; default: the model named in the first artifact's metadata),
    with the drop's exact McNemar p-value. ``backend`` is one name for all or one per artifact.
    ``input_size``/``mean``/``std`` say how to preprocess for an ONNX without resdeploy's metadata.

    ``data``: a DATA spec, ``(images, labels)`` arrays, a torch Dataset or DataLoader of
    (images, labels), or an iterable of such batches; a streamed source is read once, each batch
    run by the reference and then every artifact, so a data set larger than memory streams.
    """
    from ..measure import evaluate as evaluate_dataset
    from ..measure import evaluate_stream

    config = EvalConfig(limit=limit, batch_size=eval_batch, threads=threads, workers=workers)
    given = _given(input_size, mean, std)
    arts = _artifacts(artifacts, trust_pickle, given)
    ref = _reference(reference, arts, trust_pickle, given)
    if isinstance(ref, _ModuleArtifact):
        config = replace(config, cache_reference=False)
    found = _data.resolve(data, "data")
    if isinstance(found, tuple) and not found[1]:
        raise DataSpecError("data needs labels to evaluate: give (images, labels)")
    if isinstance(found, tuple) and found[0].images is not None:  # uint8 arrays: resized per batch, never cached
        found = _data.Stream(_data.array_batches(found[0], config.batch_size), found[0].name, items=False)
    with _progress.enabled(progress):
        if isinstance(found, _data.Stream):
            ref = ref or arts[0].reference(trust_pickle=trust_pickle)
            report = evaluate_stream(arts, found.batches(config.batch_size), found.name, reference=ref,
                                     backend=backend, config=config)
        else:
            report = evaluate_dataset(arts, found if isinstance(found, str) else found[0], reference=ref,
                                      backend=backend, config=config, trust_pickle=trust_pickle)
    return cast(EvalReport, report)


def bench(
    artifacts: PathLike | Sequence[PathLike],
    *,
    backend: str = "auto",
    batches: Sequence[int] = default(BenchConfig, "batches"),
    warmup: int = default(BenchConfig, "warmup"),
    iters: int = default(BenchConfig, "iters"),
    max_seconds: float = default(BenchConfig, "max_seconds"),
    threads: int | None = default(BenchConfig, "threads"),
    in_process: bool = False,
    trust_pickle: bool = False,
) -> BenchReport:
    """Latency percentiles and throughput per batch size of each artifact, each timed alone in a
    process of its own (``in_process=True``: all in this one), after ``warmup`` untimed iterations."""
    from ..device import environment
    from ..measure import benchmark, benchmark_isolated
    from ..runtime import check_backend

    config = BenchConfig(batches=tuple(batches), warmup=warmup, iters=iters, max_seconds=max_seconds, threads=threads)
    items = [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
    resolved = [Artifact.resolve(os.fspath(a), trust_pickle=trust_pickle) for a in items]
    for art in resolved:  # fail fast, before any timing, on a backend that cannot run here
        check_backend(art, backend)
    results = []
    for art in resolved:
        if in_process:
            results += benchmark(art, backend, config)
        else:
            results += benchmark_isolated(art.text, backend, config, {"trust_pickle": trust_pickle})
    env = environment(threads, "in-process" if in_process else "one process per artifact")
    for warning in env.get("warnings", []):
        log.warning("%s", warning)
    return BenchReport(results, env, {"warmup": config.warmup, "iters": config.iters,
                                      "max_seconds": config.max_seconds})


def make_bundle(
    outdir: PathLike,
    *,
    images: int = _param(write_bundle, "images"),
    seed: int = _param(write_bundle, "seed"),
    output: PathLike | None = None,
) -> BundleResult:
    """The deploy bundle of a ``run_pipeline`` OUTDIR (default ``OUTDIR/bundle``): its ONNX variants,
    ``images`` class-balanced golden images and every variant's expected outputs, for ``verify_bundle``
    on the device."""
    path = write_bundle(Path(outdir), images=images, seed=seed, dest=None if output is None else Path(output))
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return BundleResult(path, json.loads((path / "bundle.json").read_text()), size)


def verify_bundle(
    bundle: PathLike,
    artifact: PathLike | None = None,
    *,
    variant: str | None = None,
    backend: str = _param(verify, "backend"),
    scale_tolerance: float = _param(verify, "scale_tolerance"),
) -> VerifyReport:
    """On the device: each bundled ONNX on each backend here, or one ``artifact`` (an engine built
    there) against the ``variant`` it implements, checked against the bundle's expected outputs;
    ``passed`` on the result says whether all met their tolerances."""
    if scale_tolerance <= 0:
        raise UsageError(f"--scale-tolerance must be positive, got {scale_tolerance}")
    return cast(VerifyReport, verify(Path(bundle), None if artifact is None else os.fspath(artifact), variant=variant,
                                     backend=backend, scale_tolerance=scale_tolerance))


def run_pipeline(
    config: PathLike | None = None,
    *,
    model: str | None = None,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    trust_pickle: bool | None = None,
    calib: str | None = None,
    calib_size: int | None = None,
    calib_method: str | None = None,
    val: str | None = None,
    val_limit: int | None = None,
    max_drop: float | None = None,
    precisions: Sequence[str] | str | None = None,
    targets: Sequence[str] | str | None = None,
    batches: Sequence[int] | str | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    max_seconds: float | None = None,
    max_batch: int | None = None,
    output: PathLike | None = None,
    triton_repo: PathLike | None = None,
    argv: Sequence[str] | None = None,
    progress: bool = False,
    **settings: Any,
) -> RunResult:
    """The whole pipeline into ``output``: export, quantize, build, eval, bench, report, bundle;
    finished stages are reused when their inputs are unchanged. Each setting left None comes from
    ``config`` (a TOML file with the same names), else its default
    (:func:`resdeploy.pipeline.config.default`: the demo). Model and data are specs here, as the
    run records and reuses them by name; in-memory models and data go through the stage functions.
    ``settings`` takes any other setting by its flat name (an unknown one is a UsageError)."""
    from ..pipeline import run_config
    from ..pipeline import run_pipeline as run

    given = {"model": model, "weights": weights, "num_classes": num_classes, "input_size": input_size, "mean": mean,
             "std": std, "trust_pickle": trust_pickle, "calib": calib, "calib_size": calib_size,
             "calib_method": calib_method, "val": val, "val_limit": val_limit, "max_drop": max_drop,
             "precisions": precisions, "targets": targets, "batches": batches, "warmup": warmup, "iters": iters,
             "max_seconds": max_seconds, "max_batch": max_batch, "output": output, "triton_repo": triton_repo,
             **settings}
    for name in ("model", "calib", "val"):
        if given[name] is not None and not isinstance(given[name], (str, os.PathLike)):
            raise UsageError(f"run_pipeline takes {name} as a spec; give in-memory models and data to the stage "
                             "functions (export_model, quantize_model, evaluate)")
    flags = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in given.items()}
    cfg = run_config(None if config is None else Path(config), flags)
    with _progress.enabled(progress):
        result = cast(RunResult, run(cfg, list(argv) if argv is not None else ["resdeploy.run_pipeline"]))
    result.config = cfg
    return result
