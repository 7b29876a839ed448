"""The ``resdeploy`` command line. The only place that prints, draws progress bars and
configures logging; every failure becomes one ``error: ...`` line and an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import ResdeployError, UsageError, environment_error, numpy_abi_guard

log = logging.getLogger("resdeploy")


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's one-line error and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not when it is None or False, nor when the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or action.option_strings == []:
            return text
        return super()._get_help_string(action) or text


def _default(cls: type, name: str) -> Any:
    """A dataclass field's default, so CLI help cannot drift from the library."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise KeyError(name)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _batch_spec(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 'dynamic' or a positive integer") from None


def _batches(text: str) -> tuple[int, ...]:
    from ._parse import parse_list

    try:
        values = parse_list(text, int, "batch sizes")
    except UsageError:
        raise argparse.ArgumentTypeError(f"{text!r}: give batch sizes as 1,8,32") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes must be positive integers")
    return values


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="torchvision weights enum name (e.g. IMAGENET1K_V2) or a state_dict .pth path")
    p.add_argument("--num-classes", type=_positive_int, help="classifier width (default: from the weights, else 1000)")
    p.add_argument("--input-size", type=_positive_int, help="square input side in pixels (default: from the model)")
    p.add_argument("--mean", help="normalisation mean R,G,B (default: from the model, ImageNet for builders)")
    p.add_argument("--std", help="normalisation std R,G,B (default: from the model)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a MODEL file that is a pickled module (unpickling can run any code in it)")


def _model_spec(args: argparse.Namespace, spec: str | None = None) -> Any:
    from .models import ModelSpec
    from .preprocess import parse_triplet

    return ModelSpec(
        spec=spec or args.model,
        weights=args.weights,
        num_classes=args.num_classes,
        input_size=args.input_size,
        mean=parse_triplet(args.mean, "mean") if args.mean else None,
        std=parse_triplet(args.std, "std") if args.std else None,
        trust_pickle=args.trust_pickle,
    )


def _short(artifact: str) -> str:
    return Path(artifact).name if artifact.endswith((".onnx", ".plan", ".engine")) else artifact


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    # Not a terminal (CI logs, pipes): wide enough that nothing is truncated.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


# --- commands -------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from ._io import check_writable
    from .export import ExportConfig, export_onnx
    from .models import load_model

    config = ExportConfig(
        opset=args.opset, batch=args.batch, fold_bn=not args.no_fold_bn, simplify=not args.no_simplify
    )
    check_writable(args.output)
    model = load_model(_model_spec(args))
    r = export_onnx(model, args.output, config)
    checks = ", ".join(f"batch {c.batch}: {c.max_abs_err:.2e} ({c.relative_err:.1e} rel)" for c in r.checks)
    print(f"exported {model.description} -> {r.path}")
    print(f"  opset {config.opset}, batch {'dynamic' if config.batch is None else config.batch}, "
          f"input {list(model.preprocess.input_shape)}, {model.num_classes} classes")
    print(f"  BatchNorm folded: {r.bn_folded_torch} in torch, {r.bn_folded_onnx} in ONNX (model had {r.bn_in_model})")
    print(f"  nodes: {r.nodes_exported} exported -> {r.nodes_final} after "
          f"{'onnxsim' if r.simplified else 'folding (onnxsim skipped)'}")
    print(f"  verified against torch in ONNX Runtime, max |error|: {checks}")
    print(f"  {r.seconds:.1f} s")
    return 0


def cmd_fold_bn(args: argparse.Namespace) -> int:
    from .export import fold_bn_file

    r = fold_bn_file(args.input, args.output)
    print(f"folded {r.folded} BatchNormalization node(s) into Conv -> {r.path}"
          + (f"; {r.remaining} left (not after a Conv)" if r.remaining else ""))
    if r.training_mode_reset:
        print(f"  {r.training_mode_reset} training-mode BatchNormalization node(s) set to running statistics")
    print("  verified against the input in ONNX Runtime, max |error|: "
          + ", ".join(f"batch {c.batch}: {c.max_abs_err:.2e}" for c in r.checks))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import QuantizeConfig, quantize, report_path

    config = QuantizeConfig(
        precision=args.precision, target=args.target, calib=args.calib, calib_size=args.calib_size,
        calib_method=args.calib_method, seed=args.seed, val=args.val, max_drop=args.max_drop,
        val_limit=args.val_limit, fp32_remainder=args.fp32_remainder,
    )
    r = quantize(args.input, args.output, config)
    what = "FP16 (inputs and outputs FP32)" if r.precision == "fp16" else f"INT8 Q/DQ for {r.target}"
    print(f"quantized {args.input} -> {r.path}: {what}")
    if r.calib:
        print(f"  calibration: {r.calib['images']} images of {r.calib['data']}, {r.calib['method']}, seed {r.calib['seed']}")
        qdq = ", ".join(f"{k} {v}" for k, v in r.ops.items() if k in ("QuantizeLinear", "DequantizeLinear", "Cast"))
        print(f"  quantizable layers: {r.units}; ops: {qdq}")
    if r.verify:
        worst = max(c["max_abs_err"] for c in r.verify["checks"])
        print(f"  verified against FP32 on seeded inputs: max |error| {worst:.3g}")
    if r.budget:
        b = r.budget
        budget = f"budget {b['max_drop_pp']} pp" if b.get("max_drop_pp") is not None else "no --max-drop budget"
        print(f"  top-1 on {b.get('data', args.val)}: {100 * b['top1']:.2f}% vs FP32 {100 * b['fp32_top1']:.2f}% "
              f"(drop {b['drop_pp']:.3f} pp, {budget})")
    if r.fallback:
        print(f"  fell back to higher precision ({len(r.fallback)}): {', '.join(r.fallback)}")
    if r.layers:
        worst3 = sorted(r.layers, key=lambda x: x["sqnr_db"])[:3]
        print("  lowest SQNR against FP32: " + ", ".join(
            f"{x['module']} ({x['kind']}) {x['sqnr_db']:.1f} dB" for x in worst3))
    print(f"  report: {report_path(r.path)}; {r.seconds:.1f} s")
    return 0


def _trtexec_builder(runtime: str, trt_version: str | None) -> tuple[str, str, str]:
    """(family, version, where the version came from) for --print-trtexec: ``auto`` is TensorRT
    where it is importable (or --trt-version names a TensorRT release), else TensorRT-RTX."""
    from ._tensorrt import import_builder
    from .engine import FAMILIES

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


def cmd_build(args: argparse.Namespace) -> int:
    from .engine import FAMILIES, BuildConfig, build_engine, inspect_onnx, trtexec_line

    config = BuildConfig(min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                         workspace_mib=args.workspace, timing_cache=args.timing_cache, dla_core=args.dla_core,
                         compute_capabilities=tuple(args.compute_capability or ()))
    if args.print_trtexec:
        builder, version, source = _trtexec_builder(args.runtime, args.trt_version)
        info = inspect_onnx(args.input)
        line = trtexec_line(info, str(args.output), version, config, builder=builder)
        print(f"# {FAMILIES[builder].label} {version} ({source}), {info.precision} ONNX; recipe for "
              f"{_recipe_name(FAMILIES[builder].label, line.recipe.generation)}")
        for note in line.recipe.notes:
            print(f"# {note}")
        print(line.text)
        return 0
    if args.trt_version:
        raise UsageError("--trt-version goes with --print-trtexec; a build uses the installed TensorRT")
    r = build_engine(args.input, args.output, config, runtime=args.runtime)
    rec = r.record
    where = f"on {rec['gpu']} (sm {rec['compute_capability']})" if rec["gpu"] else "ahead of time, without a GPU"
    print(f"built {r.plan} with {rec['builder']['name']} {rec['builder']['version']} {where}; "
          f"compute capabilities: {rec['compute_capabilities_targeted']}")
    print(f"  {rec['precision']} ONNX, recipe for {_recipe_name(rec['builder']['name'], rec['recipe']['generation'])}: "
          f"strongly typed {rec['recipe']['strongly_typed']}, flags +{rec['recipe']['set_flags']} -{rec['recipe']['cleared_flags']}")
    print(f"  profile {rec['profile']}; record {r.plan}.json; {r.seconds:.1f} s")
    return 0


def _recipe_name(label: str, generation: str) -> str:
    """"TensorRT 10" for TensorRT's generations; TensorRT-RTX has one recipe ("rtx"), named by its label alone."""
    return label if generation == "rtx" else f"{label} {generation}"


def _bench_rows(results: list[Any]) -> list[list[str]]:
    return [[_short(r.artifact), r.backend, r.precision, str(r.batch), f"{r.latency_ms['p50']:.2f}",
             f"{r.latency_ms['p90']:.2f}", f"{r.latency_ms['p99']:.2f}", f"{r.latency_ms['mean']:.2f}",
             f"{r.throughput_ips:.1f}", str(r.iters)] for r in results]


def cmd_bench(args: argparse.Namespace) -> int:
    from ._io import check_writable, write_json
    from .device import environment
    from .measure import BenchConfig, benchmark, benchmark_isolated
    from .runtime import Artifact, check_backend

    config = BenchConfig(batches=args.batch, warmup=args.warmup, iters=args.iters,
                         max_seconds=args.max_seconds, threads=args.threads)
    if args.json:
        check_writable(args.json)
    artifacts = [Artifact.resolve(a, trust_pickle=args.trust_pickle) for a in args.artifacts]
    for art in artifacts:  # fail fast, before any timing, on a backend that cannot run here
        check_backend(art, args.backend)
    results = []
    for art in artifacts:
        if args.in_process:
            results += benchmark(art, args.backend, config)
        else:
            results += benchmark_isolated(art.text, args.backend, config, {"trust_pickle": args.trust_pickle})
    env = environment(args.threads, "in-process" if args.in_process else "one process per artifact")
    _print_table(f"latency (ms) on {env['cpu']}, {env['threads']} threads, {env['isolation']}",
                 ["artifact", "backend", "precision", "batch", "p50", "p90", "p99", "mean", "img/s", "iters"],
                 _bench_rows(results))
    gpu = [r for r in results if r.gpu_compute_ms is not None]
    if gpu:  # trtexec's breakdown, so the figures compare with its "Latency", "GPU Compute Time", "Enqueue Time"
        _print_table("GPU figures as trtexec reports them (ms, median iteration: H2D + compute + D2H = p50)",
                     ["artifact", "backend", "batch", "H2D", "GPU compute", "D2H", "enqueue", "host memory"],
                     [[_short(r.artifact), r.backend, str(r.batch), f"{r.h2d_ms:.3f}", f"{r.gpu_compute_ms:.3f}",
                       f"{r.d2h_ms:.3f}", f"{r.enqueue_ms:.3f}", str(r.host_memory)] for r in gpu])
    for warning in env.get("warnings", []):
        log.warning("%s", warning)
    if args.json:
        write_json(args.json, {"results": [r.to_dict() for r in results], "env": env,
                               "config": {"warmup": config.warmup, "iters": config.iters, "max_seconds": config.max_seconds}})
        print(f"wrote {args.json}")
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def cmd_eval(args: argparse.Namespace) -> int:
    from ._io import check_writable, write_json
    from .measure import EvalConfig, evaluate
    from .runtime import Artifact

    config = EvalConfig(limit=args.limit, batch_size=args.eval_batch, threads=args.threads, workers=args.workers)
    if args.json:
        check_writable(args.json)
    artifacts = [Artifact.resolve(a, trust_pickle=args.trust_pickle) for a in args.artifacts]
    reference = Artifact.resolve(args.reference, trust_pickle=args.trust_pickle) if args.reference else None
    report = evaluate(artifacts, args.data, reference=reference, backend=args.backend, config=config,
                      trust_pickle=args.trust_pickle)
    ref = report.reference
    lo, hi = ref["top1_ci95"]
    rows = [[f"{_short(ref['artifact'])} (reference)", ref["backend"], "fp32", str(ref["n"]), _pct(ref["top1"]),
             f"{_pct(lo)}-{_pct(hi)}", _pct(ref["top5"]), "-", "-", "-"]]
    for r in report.results:
        rows.append([_short(r.artifact), r.backend, r.precision, str(r.n), _pct(r.top1),
                     f"{_pct(r.top1_ci95[0])}-{_pct(r.top1_ci95[1])}", _pct(r.top5), _pct(r.agreement_top1),
                     f"{r.drop_pp:+.2f} (p={r.drop_p_value:.2g})", f"{r.max_abs_logit_err:.3g}"])
    _print_table(f"accuracy on {report.data}", ["artifact", "backend", "precision", "n", "top-1 %", "95% CI",
                                                 "top-5 %", "agree %", "drop pp", "max |dlogit|"], rows)
    for r in report.results:
        print(f"  {_short(r.artifact)}: {r.drop_words}")
    t = report.timing
    print(f"  {t['wall_seconds']:.1f} s: decoding {t['decode_seconds']:.1f} s, each model alone")
    if args.json:
        write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import SETTINGS, run_config, run_pipeline, summary_rows

    given = vars(args)
    flags = {name: given.get(name) for name in (*SETTINGS, "batch") if name != "batches"}
    flags["trust_pickle"] = True if args.trust_pickle else None  # a flag cannot unset the file's true
    cfg = run_config(args.config, flags)
    result = run_pipeline(cfg, ["resdeploy", *args.argv])
    cols, rows = summary_rows(result.report)
    ref = result.report["reference"]
    _print_table(f"{cfg.model.spec} on {cfg.val}: FP32 torch top-1 {100 * ref['top1']:.2f} % over {ref['n']} images",
                 cols, rows)
    total = sum(s["seconds"] for s in result.stages)
    reused = sum(1 for s in result.stages if s.get("reused"))
    print(f"report: {result.outdir / 'report.md'} (+ report.json, manifest.json, plots/, bundle/); "
          f"{len(result.stages)} stages in {total:.0f} s, {reused} reused")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from .device import write_bundle

    path = write_bundle(args.outdir, images=args.images, seed=args.seed, dest=args.output)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 1e6
    print(f"wrote {path} ({size:.1f} MB): copy it to the device and run `resdeploy verify {path.name}` there")
    return 0


def _verify_rows(report: Any) -> list[list[str]]:
    rows = []
    for r in report.results:
        where = "-"
        if r.first_divergent is not None:
            d = r.first_divergent
            where = f"{d.module} ({d.node}), rel. error {d.rel_err:.3g} > {d.tolerance:g}"
        rows.append([_short(r.artifact), r.variant, r.backend, str(r.n), _pct(r.agreement_expected),
                     _pct(r.agreement_reference), _pct(r.top1), f"{r.max_abs_err_expected:.3g}",
                     "pass" if r.passed else "FAIL", where])
    return rows


def cmd_verify(args: argparse.Namespace) -> int:
    from ._io import check_writable, write_json
    from .device import verify

    if args.json:
        check_writable(args.json)
    if args.scale_tolerance <= 0:
        raise UsageError(f"--scale-tolerance must be positive, got {args.scale_tolerance}")
    report = verify(args.bundle, args.artifact, variant=args.variant, backend=args.backend,
                    scale_tolerance=args.scale_tolerance)
    _print_table(f"verify against {report.bundle['path']} ({report.bundle['golden']['n']} golden images)",
                 ["artifact", "variant", "backend", "n", "agree expected %", "agree FP32 %", "top-1 %",
                  "max |dlogit|", "result", "first divergent layer"], _verify_rows(report))
    for r in report.results:
        if r.hint:
            print(f"  {_short(r.artifact)} failed; compare it layer by layer on the device with:\n    {r.hint}")
    for warning in report.env.get("warnings", []):
        log.warning("%s", warning)
    if args.json:
        write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    return 0 if report.passed else 1


# --- parser: one function per subcommand ------------------------------------------------------

Sub = Any  # argparse's private _SubParsersAction


def _add_export(sub: Sub) -> None:
    from .export import ExportConfig

    p = sub.add_parser("export", help="torch model -> verified, BN-folded, simplified ONNX", formatter_class=_Help)
    p.add_argument("model", metavar="MODEL", help="resnet18|...|resnext101_64x4d, zoo:NAME, a model file, or pkg.mod:factory")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    _add_model_options(p)
    p.add_argument("--opset", type=int, default=_default(ExportConfig, "opset"), help="ONNX opset (TensorRT 8.6 reads <= 17)")
    p.add_argument("--batch", type=_batch_spec, default=_default(ExportConfig, "batch"), metavar="dynamic|N",
                   help="batch dimension (default: dynamic)")
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization layers")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.set_defaults(func=cmd_export)


def _add_fold_bn(sub: Sub) -> None:
    p = sub.add_parser("fold-bn", help="fold Conv -> BatchNormalization pairs of an existing ONNX", formatter_class=_Help)
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.set_defaults(func=cmd_fold_bn)


def _add_quantize(sub: Sub) -> None:
    from .quantize import CALIB_METHODS, PRECISIONS, TARGETS, QuantizeConfig

    p = sub.add_parser("quantize", help="FP16, or INT8 Q/DQ by calibration for TensorRT or the CPU", formatter_class=_Help)
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--precision", required=True, choices=PRECISIONS)
    p.add_argument("--target", default=_default(QuantizeConfig, "target"), choices=TARGETS,
                   help="tensorrt: symmetric s8, TensorRT placement; cpu: u8/s8, what ONNX Runtime runs fastest")
    p.add_argument("--calib", metavar="DATA", help="calibration data (required for int8), e.g. fashion-mnist:train")
    p.add_argument("--calib-size", type=_positive_int, default=_default(QuantizeConfig, "calib_size"), help="images, spread over classes")
    p.add_argument("--calib-method", default=_default(QuantizeConfig, "calib_method"), choices=CALIB_METHODS,
                   help="activation threshold: mse (the clip minimising the quantization error), percentile 99.99%%, "
                        "TensorRT's entropy (KL) or minmax")
    p.add_argument("--seed", type=int, default=_default(QuantizeConfig, "seed"), help="calibration image selection")
    p.add_argument("--val", metavar="DATA", help="validation data for --max-drop and the per-layer report")
    p.add_argument("--max-drop", type=float, metavar="PP", help="largest top-1 drop allowed, in percentage points")
    p.add_argument("--val-limit", type=_positive_int, help="first N validation images only")
    p.add_argument("--fp32-remainder", action="store_true", help="tensorrt target: keep unquantized layers FP32, not FP16")
    p.set_defaults(func=cmd_quantize)


def _compute_capabilities(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _add_build(sub: Sub) -> None:
    from .engine import FAMILIES, BuildConfig
    from .engine.recipe import RTX_TARGETS

    p = sub.add_parser("build", help="TensorRT or TensorRT-RTX engine with the recipe of the installed release",
                       formatter_class=_Help)
    p.add_argument("input", metavar="IN.onnx", help="FP32, FP16 or INT8 Q/DQ ONNX from resdeploy")
    p.add_argument("-o", "--output", required=True, metavar="OUT.plan")
    p.add_argument("--min-batch", type=_positive_int, default=_default(BuildConfig, "min_batch"), help="profile minimum batch")
    p.add_argument("--opt-batch", type=_positive_int, default=_default(BuildConfig, "opt_batch"), help="batch TensorRT tunes for")
    p.add_argument("--max-batch", type=_positive_int, default=_default(BuildConfig, "max_batch"), help="profile maximum batch")
    p.add_argument("--workspace", type=_positive_int, default=_default(BuildConfig, "workspace_mib"), metavar="MiB",
                   help="workspace memory pool limit (default: TensorRT's; keep it small on Jetson)")
    p.add_argument("--timing-cache", metavar="PATH", help="loaded if present, saved after the build")
    p.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N with GPU fallback (Jetson Orin; static batch)")
    p.add_argument("--runtime", choices=("auto", *FAMILIES), default="auto",
                   help="builder family: auto = TensorRT where importable, else TensorRT-RTX (RTX PCs; builds "
                        "without a GPU)")
    p.add_argument("--compute-capability", type=_compute_capabilities, metavar="CC[,CC...]",
                   help="TensorRT-RTX targets: " + ", ".join(RTX_TARGETS) + " (default: its portable set, Ampere and later)")
    p.add_argument("--print-trtexec", action="store_true",
                   help="print the equivalent trtexec (tensorrt_rtx) command instead (neither needs to be installed)")
    p.add_argument("--trt-version", metavar="X.Y[.Z]",
                   help="with --print-trtexec: the release, e.g. 8.6, 10.3, 10.13, 11.4.1 (TensorRT-RTX: 1.7.1) "
                        "(default: the installed one, else 10.3; TensorRT-RTX 1.7.1)")
    p.set_defaults(func=cmd_build)


def _add_run(sub: Sub) -> None:
    from .pipeline.config import default as d
    from .quantize import CALIB_METHODS
    p = sub.add_parser("run", help="the whole pipeline: export, quantize, build, eval, bench, report", formatter_class=_Help)
    p.add_argument("config", nargs="?", metavar="CONFIG.toml", help="settings with the same names as the flags (flags win)")
    p.add_argument("--model", help=f"MODEL spec (default: {d('model')})")
    _add_model_options(p)
    p.add_argument("--calib", help=f"calibration DATA (default: {d('calib')})")
    p.add_argument("--calib-size", type=_positive_int, help=f"calibration images (default: {d('calib_size')})")
    p.add_argument("--calib-method", choices=CALIB_METHODS, help=f"calibration method (default: {d('calib_method')})")
    p.add_argument("--val", help=f"validation DATA (default: {d('val')})")
    p.add_argument("--val-limit", type=_positive_int, help="first N validation images only (default: all)")
    p.add_argument("--max-drop", type=float, metavar="PP", help="INT8 top-1 budget in percentage points (default: none)")
    p.add_argument("--precisions", help=f"variants to build, e.g. 'fp32, int8' (default: {','.join(d('precisions'))})")
    p.add_argument("--targets", help=f"INT8 targets (default: {','.join(d('targets'))})")
    p.add_argument("--batch", help=f"bench batch sizes (default: {','.join(map(str, d('batches')))})")
    p.add_argument("--iters", type=_positive_int, help=f"timed iterations per batch size (default: {d('iters')})")
    p.add_argument("--warmup", type=int, help=f"untimed iterations first (default: {d('warmup')})")
    p.add_argument("--max-seconds", type=float, help=f"bench time budget per batch size (default: {d('max_seconds')})")
    p.add_argument("-o", "--output", metavar="OUTDIR", help=f"output folder (default: {d('output')})")
    p.add_argument("--triton-repo", metavar="DIR", help="also write a Triton model repository there (default: none)")
    p.set_defaults(func=cmd_run)


def _add_bench(sub: Sub) -> None:
    from .measure import BenchConfig
    from .runtime import backend_help, backend_names

    p = sub.add_parser("bench", help="latency percentiles and throughput per batch size", formatter_class=_Help)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".onnx, TensorRT .plan, or a MODEL spec (torch)")
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()],
                   help=f"auto: .plan->tensorrt, .onnx->ort-cuda|ort-cpu, MODEL->torch; {backend_help()}")
    p.add_argument("--batch", type=_batches, default=_default(BenchConfig, "batches"), metavar="1,8",
                   help=f"batch sizes (default: {','.join(map(str, _default(BenchConfig, 'batches')))})")
    p.add_argument("--warmup", type=int, default=_default(BenchConfig, "warmup"), help="untimed iterations first")
    p.add_argument("--iters", type=_positive_int, default=_default(BenchConfig, "iters"), help="timed iterations per batch size")
    p.add_argument("--max-seconds", type=float, default=_default(BenchConfig, "max_seconds"),
                   help="time budget per batch size (stops early, after at least 10 iterations)")
    p.add_argument("--threads", type=_positive_int, default=_default(BenchConfig, "threads"), help="CPU threads (default: all cores)")
    p.add_argument("--in-process", action="store_true", help="time all artifacts in this process (default: one process each)")
    p.add_argument("--trust-pickle", action="store_true", help="allow a MODEL file that is a pickled module")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.set_defaults(func=cmd_bench)


def _add_eval(sub: Sub) -> None:
    from .measure import EvalConfig
    from .runtime import backend_help, backend_names

    p = sub.add_parser("eval", help="top-1/top-5 on a data set and agreement with the FP32 reference", formatter_class=_Help)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT")
    p.add_argument("--data", required=True, metavar="DATA", help="fashion-mnist[:train|:test], an ImageFolder dir, or an .npz")
    p.add_argument("--reference", metavar="MODEL|FP32.onnx", help="default: the torch model named in the ONNX metadata")
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()], help=backend_help())
    p.add_argument("--limit", type=_positive_int, default=_default(EvalConfig, "limit"), help="first N images only (default: all)")
    p.add_argument("--eval-batch", type=_positive_int, default=_default(EvalConfig, "batch_size"), help="images per inference")
    p.add_argument("--threads", type=_positive_int, default=_default(EvalConfig, "threads"), help="CPU threads (default: all cores)")
    p.add_argument("--workers", type=_positive_int, default=_default(EvalConfig, "workers"),
                   help="image decoding threads (default: one per core)")
    p.add_argument("--trust-pickle", action="store_true", help="allow a reference MODEL file that is a pickled module")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.set_defaults(func=cmd_eval)


def _add_bundle(sub: Sub) -> None:
    p = sub.add_parser("bundle", help="the deploy bundle of a run: ONNX variants, golden images, expected outputs",
                       formatter_class=_Help)
    p.add_argument("outdir", metavar="OUTDIR", help="a `resdeploy run` output folder")
    p.add_argument("--images", type=_positive_int, default=256, help="golden images, class-balanced and seeded")
    p.add_argument("--seed", type=int, default=0, help="golden image selection")
    p.add_argument("-o", "--output", metavar="DIR", help="bundle folder (default: OUTDIR/bundle)")
    p.set_defaults(func=cmd_bundle)


def _add_verify(sub: Sub) -> None:
    from .runtime import backend_help, backend_names

    p = sub.add_parser("verify", help="on the device: check artifacts against the bundle's expected outputs",
                       formatter_class=_Help)
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle/ folder written by `run` or `bundle`")
    p.add_argument("artifact", nargs="?", metavar="ARTIFACT",
                   help="a .plan built on the device, or any .onnx (default: every bundled ONNX on every backend here)")
    p.add_argument("--variant", metavar="NAME", help="the variant ARTIFACT implements (default: from its source sha256)")
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()], help=backend_help())
    p.add_argument("--scale-tolerance", type=float, default=1.0, metavar="F",
                   help="loosen (F > 1) or tighten the bundle's per-variant tolerances")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.set_defaults(func=cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="resdeploy",
        description="A trained ResNet from PyTorch to a fast, verified edge deployment (ONNX, INT8, TensorRT).",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"resdeploy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_export, _add_fold_bn, _add_quantize, _add_build, _add_run, _add_bench, _add_eval, _add_bundle,
                _add_verify):
        add(sub)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    root = logging.getLogger("resdeploy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    _setup_logging(args.debug, args.quiet)
    from . import _progress

    _progress.enable(not args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with numpy_abi_guard(show=args.debug):  # NumPy's banner about a NumPy 1.x build: one line below instead
            return func(args)
    except ResdeployError as exc:
        if args.debug:
            if exc.child_traceback:  # the error met in a worker process: its own traceback first
                sys.stderr.write(f"in the worker process:\n{exc.child_traceback}\n")
            raise
        shown = (None if isinstance(exc, UsageError) else environment_error(exc)) or exc  # e.g. an export failed for it
        sys.stderr.write(f"error: {shown}\n")
        return shown.exit_code
    except BrokenPipeError:
        # `resdeploy ... | head`: the reader left. As cat does: no message, 128 + SIGPIPE; stdout is
        # pointed at /dev/null so that the interpreter's own flush at exit cannot fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (an embedding program's stream)
            pass
        return 141
    except KeyboardInterrupt:
        resume = "; rerun the same command to resume (finished stages are kept)" if args.command == "run" else ""
        sys.stderr.write(f"error: interrupted{resume}\n")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        known = environment_error(exc)
        if known is not None:
            sys.stderr.write(f"error: {known}\n")
            return known.exit_code
        first = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {first[:300]}; rerun with --debug and report it\n")
        return 1


__all__ = ["UsageError", "build_parser", "main"]
