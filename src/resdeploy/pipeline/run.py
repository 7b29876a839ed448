"""``resdeploy run``: export -> quantize -> build -> eval -> bench as a composition of the
stage functions, each timed and cached by its inputs' hashes, then report and manifest."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, _io
from ..build import BuildConfig, choose_recipe, format_command, inspect_onnx, profile_shapes, trtexec_command
from ..build._trt import import_tensorrt
from ..models import ModelSpec, load_model
from ..quantize import QuantizeConfig, quantize
from ..runtime import Artifact, BenchConfig, EvalConfig, benchmark_isolated, environment, evaluate
from ..runtime.registry import get_backend
from ._stages import StageStore
from .config import RunConfig

log = logging.getLogger(__name__)

__all__ = ["RunResult", "Variant", "run_pipeline"]


@dataclass
class Variant:
    name: str
    precision: str
    target: str
    path: Path | None  # None: the torch model itself
    quantize: QuantizeConfig | None = None


@dataclass
class RunResult:
    outdir: Path
    report: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)


def _spec(cfg: RunConfig) -> ModelSpec:
    return ModelSpec(cfg.model, weights=cfg.weights, num_classes=cfg.num_classes, input_size=cfg.input_size,
                     mean=cfg.mean, std=cfg.std)


def _model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What determines the FP32 model's weights, computable before exporting."""
    ident: dict[str, Any] = asdict(spec)
    if spec.spec.startswith("zoo:"):
        from ..zoo import load_zoo_model, zoo_path

        load_zoo_model(spec.spec[4:])  # trains on first use, so the weights exist to be hashed
        ident["weights_sha256"] = _io.sha256_file(zoo_path(spec.spec[4:]))
    elif spec.weights and Path(spec.weights).is_file():
        ident["weights_sha256"] = _io.sha256_file(spec.weights)
    elif Path(spec.spec).is_file():
        ident["file_sha256"] = _io.sha256_file(spec.spec)
    return ident


def _slug(cfg: RunConfig) -> str:
    """A file- and Triton-safe name for the model: ``zoo:fashion-resnet18`` -> ``fashion-resnet18``."""
    stem = Path(cfg.model.removeprefix("zoo:")).stem
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem) or "model"


def _variants(cfg: RunConfig, out: Path, slug: str) -> list[Variant]:
    vs = []
    if "fp32" in cfg.precisions:
        vs.append(Variant("fp32", "fp32", "cpu", out / f"{slug}-fp32.onnx"))
    if "fp16" in cfg.precisions:
        vs.append(Variant("fp16", "fp16", "tensorrt", out / f"{slug}-fp16.onnx", QuantizeConfig(precision="fp16")))
    if "int8" in cfg.precisions:
        for target in cfg.targets:
            q = QuantizeConfig(precision="int8", target=target, calib=cfg.calib, calib_size=cfg.calib_size,
                               calib_method=cfg.calib_method, val=cfg.val if cfg.max_drop is not None else None,
                               max_drop=cfg.max_drop, val_limit=cfg.val_limit)
            vs.append(Variant(f"int8-{target}", "int8", target, out / f"{slug}-int8-{target}.onnx", q))
    return vs


def _onnx_backends() -> list[str]:
    """ONNX Runtime backends usable here (ort-cpu always; GPU providers where installed)."""
    return [b for b in ("ort-cpu", "ort-cuda", "ort-trt") if get_backend(b).unavailable_reason() is None]


def run_pipeline(cfg: RunConfig, argv: list[str] | None = None) -> RunResult:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _io.check_writable(out / "report.json")
    store = StageStore(out)
    stages: list[dict[str, Any]] = []
    slug = _slug(cfg)

    def stage(name: str, params: dict[str, Any], produce: Any, artifacts: list[Path], artifact: Path | None) -> Any:
        t0 = time.perf_counter()
        result, reused = store.run(name, {**params, "resdeploy": __version__}, produce, artifacts)
        stages.append({"name": name, "seconds": round(time.perf_counter() - t0, 3),
                       "artifact": str(artifact) if artifact else None, "reused": reused})
        log.info("stage %s: %s in %.1f s", name, "reused" if reused else "done", stages[-1]["seconds"])
        return result

    # export
    spec = _spec(cfg)
    ident = _model_identity(spec)
    fp32 = out / f"{slug}-fp32.onnx"

    def do_export() -> dict[str, Any]:
        from ..export import export_onnx

        return export_onnx(load_model(spec), fp32).to_dict()

    export_info = stage("export", {"model": ident}, do_export, [fp32], fp32)
    fp32_sha = _io.sha256_file(fp32)

    # quantize
    variants = _variants(cfg, out, slug)
    quant_reports: dict[str, Any] = {}
    for v in variants:
        if v.quantize is None or v.path is None:
            continue
        path, qcfg = v.path, v.quantize
        quant_reports[v.name] = stage(
            f"quantize:{v.name}", {"fp32": fp32_sha, "config": asdict(qcfg)},
            lambda path=path, qcfg=qcfg: quantize(fp32, path, qcfg).to_dict(), [path], path,
        )

    # build (TensorRT where installed; the trtexec commands always)
    trt = import_tensorrt()
    plans: list[Variant] = []
    build_cfg = BuildConfig(min_batch=1, opt_batch=max(cfg.batches), max_batch=cfg.max_batch)
    commands = ["#!/bin/sh", "# trtexec equivalents of `resdeploy build`, per TensorRT generation"]
    for v in variants:
        assert v.path is not None
        info = inspect_onnx(v.path)
        shapes = profile_shapes(info.input_shape, build_cfg)
        for gen in ("8.6", "10", "11"):
            recipe = choose_recipe(gen, info.precision, build_cfg)
            plan = v.path.with_name(f"{v.path.stem}-trt{gen}.plan")
            commands.append(f"# TensorRT {gen}, {v.name}")
            commands.append(format_command(trtexec_command(v.path.name, plan.name, input_name=info.input_name,
                                                           shapes=shapes, recipe=recipe, config=build_cfg)))
    (out / "trtexec.sh").write_text("\n".join(commands) + "\n")
    if trt is not None and get_backend("tensorrt").unavailable_reason() is None:
        from ..build import build_engine

        for v in variants:
            assert v.path is not None
            plan = v.path.with_suffix(".plan")
            stage(f"build:{v.name}", {"onnx": _io.sha256_file(v.path), "config": asdict(build_cfg), "trt": trt.__version__},
                  lambda v=v, plan=plan: build_engine(v.path, plan, build_cfg).record, [plan], plan)
            plans.append(Variant(v.name, v.precision, v.target, plan))
    else:
        reason = "TensorRT is not installed" if trt is None else get_backend("tensorrt").unavailable_reason()
        stages.append({"name": "build", "seconds": 0.0, "artifact": None, "skipped": f"{reason}; see trtexec.sh"})
        log.info("build: skipped (%s); trtexec commands in %s", reason, out / "trtexec.sh")

    # eval: every artifact against the FP32 torch reference
    onnx_backends = _onnx_backends()
    runs: list[tuple[Variant, str]] = [(v, b) for v in variants for b in onnx_backends] + [(p, "tensorrt") for p in plans]
    eval_items = list(dict.fromkeys(str(v.path) for v, _ in runs))
    hashes = {p: _io.sha256_file(p) for p in eval_items}

    def do_eval() -> dict[str, Any]:
        report = evaluate([Artifact.resolve(p) for p in eval_items], cfg.val, config=EvalConfig(limit=cfg.val_limit))
        return report.to_dict()

    accuracy = stage("eval", {"artifacts": hashes, "val": cfg.val, "limit": cfg.val_limit, "model": ident},
                     do_eval, [], None)

    # bench: each (artifact, backend) in its own process, plus the torch reference
    bcfg = BenchConfig(batches=cfg.batches, warmup=cfg.warmup, iters=cfg.iters, max_seconds=cfg.max_seconds)
    env = environment(None, "one process per artifact")
    bench_params = {"config": asdict(bcfg), "cpu": env["cpu"], "versions": env["versions"]}
    latency: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v, backend in [(Variant("torch", "fp32", "cpu", None), "torch"), *runs]:
        text = str(v.path) if v.path else cfg.model
        identity = hashes[text] if v.path else ident
        results = stage(f"bench:{v.name}:{backend}", {**bench_params, "artifact": identity, "backend": backend},
                        lambda text=text, backend=backend: [r.to_dict() for r in benchmark_isolated(
                            text, backend, bcfg, _model_options(spec))],
                        [], v.path)
        latency[(text, backend)] = results

    from .report import write_outputs

    report = write_outputs(out, cfg, slug, export_info, quant_reports, accuracy, latency, [*variants, *plans],
                           stages, env, argv or sys.argv)
    return RunResult(out, report, stages)


def _model_options(spec: ModelSpec) -> dict[str, Any]:
    opts = asdict(spec)
    opts.pop("spec")
    return opts
