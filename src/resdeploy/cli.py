"""The ``resdeploy`` command line. The only place that prints, draws progress bars and
configures logging; every failure becomes one ``error: ...`` line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, NoReturn

from . import __version__
from .errors import ResdeployError, UsageError

log = logging.getLogger("resdeploy")


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's one-line error and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


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


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="torchvision weights enum name (e.g. IMAGENET1K_V2) or a state_dict .pth path")
    p.add_argument("--num-classes", type=_positive_int, help="classifier width (default: from the weights, else 1000)")
    p.add_argument("--input-size", type=_positive_int, help="square input side in pixels (default: from the model)")
    p.add_argument("--mean", help="normalisation mean R,G,B (default: from the model, ImageNet for builders)")
    p.add_argument("--std", help="normalisation std R,G,B (default: from the model)")


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
    )


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
    print(f"  BatchNorm folded: {r.bn_folded_torch} in torch, {r.bn_folded_onnx} in ONNX "
          f"(model had {r.bn_in_model})")
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


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give batch sizes as 1,8,32") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes must be positive integers")
    return values


def _short(artifact: str) -> str:
    from pathlib import Path

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


def cmd_bench(args: argparse.Namespace) -> int:
    from ._io import check_writable, write_json
    from .runtime import Artifact, BenchConfig, benchmark, benchmark_isolated, environment
    from .runtime.registry import check_backend

    config = BenchConfig(batches=args.batch, warmup=args.warmup, iters=args.iters,
                         max_seconds=args.max_seconds, threads=args.threads)
    if args.json:
        check_writable(args.json)
    artifacts = [Artifact.resolve(a) for a in args.artifacts]
    for art in artifacts:  # fail fast, before any timing, on a backend that cannot run here
        check_backend(art, args.backend)
    results = []
    for art in artifacts:
        if args.in_process:
            results += benchmark(art, args.backend, config)
        else:
            results += benchmark_isolated(art.text, args.backend, config)
    env = environment(args.threads, "in-process" if args.in_process else "one process per artifact")
    rows = [[_short(r.artifact), r.backend, r.precision, str(r.batch), f"{r.latency_ms['p50']:.2f}",
             f"{r.latency_ms['p90']:.2f}", f"{r.latency_ms['p99']:.2f}", f"{r.latency_ms['mean']:.2f}",
             f"{r.throughput_ips:.1f}", str(r.iters)] for r in results]
    _print_table(f"latency (ms) on {env['cpu']}, {env['threads']} threads, {env['isolation']}",
                 ["artifact", "backend", "precision", "batch", "p50", "p90", "p99", "mean", "img/s", "iters"], rows)
    if args.json:
        write_json(args.json, {"results": [r.to_dict() for r in results], "env": env,
                               "config": {"warmup": config.warmup, "iters": config.iters, "max_seconds": config.max_seconds}})
        print(f"wrote {args.json}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ._io import check_writable, write_json
    from .data import load_dataset
    from .runtime import Artifact, EvalConfig, evaluate

    config = EvalConfig(limit=args.limit, batch_size=args.eval_batch, threads=args.threads)
    if args.json:
        check_writable(args.json)
    artifacts = [Artifact.resolve(a) for a in args.artifacts]
    reference = Artifact.resolve(args.reference) if args.reference else None
    dataset = load_dataset(args.data)
    report = evaluate(artifacts, dataset, reference=reference, backend=args.backend, config=config)
    ref = report.reference
    rows = [[f"{_short(ref['artifact'])} (reference)", ref["backend"], "fp32", str(ref["n"]), f"{100 * ref['top1']:.2f}",
             f"{100 * ref['top5']:.2f}", "-", "-"]]
    for r in report.results:
        rows.append([_short(r.artifact), r.backend, r.precision, str(r.n), f"{100 * r.top1:.2f}", f"{100 * r.top5:.2f}",
                     f"{100 * r.agreement_top1:.2f}", f"{r.max_abs_logit_err:.3g}"])
    _print_table(f"accuracy on {report.data}", ["artifact", "backend", "precision", "n", "top-1 %", "top-5 %",
                                                 "agree %", "max |dlogit|"], rows)
    if args.json:
        write_json(args.json, report.to_dict())
        print(f"wrote {args.json}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .build import (
        BuildConfig,
        build_engine,
        choose_recipe,
        format_command,
        inspect_onnx,
        profile_shapes,
        trtexec_command,
    )
    from .build._trt import import_tensorrt

    config = BuildConfig(min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                         workspace_mib=args.workspace, timing_cache=args.timing_cache, dla_core=args.dla_core)
    if args.print_trtexec:
        trt = import_tensorrt()
        version = args.trt_version or (trt.__version__ if trt is not None else "10")
        info = inspect_onnx(args.input)
        recipe = choose_recipe(version, info.precision, config)
        cmd = trtexec_command(str(args.input), str(args.output), input_name=info.input_name,
                              shapes=profile_shapes(info.input_shape, config), recipe=recipe, config=config)
        print(f"# TensorRT {recipe.generation}, {info.precision} ONNX")
        print(format_command(cmd))
        return 0
    if args.trt_version:
        raise UsageError("--trt-version goes with --print-trtexec; a build uses the installed TensorRT")
    r = build_engine(args.input, args.output, config)
    rec = r.record
    print(f"built {r.plan} with TensorRT {rec['tensorrt_version']} on {rec['gpu']} (sm {rec['compute_capability']})")
    print(f"  {rec['precision']} ONNX, recipe for TensorRT {rec['recipe']['generation']}: "
          f"strongly typed {rec['recipe']['strongly_typed']}, flags +{rec['recipe']['set_flags']} -{rec['recipe']['cleared_flags']}")
    print(f"  profile {rec['profile']}; record {r.plan}.json; {r.seconds:.0f} s")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import RunConfig, load_config, run_pipeline, summary_rows
    from .preprocess import parse_triplet

    settings = load_config(args.config) if args.config else {}
    flags = {
        "model": args.model, "weights": args.weights, "num_classes": args.num_classes, "input_size": args.input_size,
        "mean": parse_triplet(args.mean, "mean") if args.mean else None,
        "std": parse_triplet(args.std, "std") if args.std else None,
        "calib": args.calib, "calib_size": args.calib_size, "calib_method": args.calib_method, "val": args.val,
        "val_limit": args.val_limit, "max_drop": args.max_drop,
        "precisions": tuple(args.precisions.split(",")) if args.precisions else None,
        "targets": tuple(args.targets.split(",")) if args.targets else None,
        "batches": args.batch, "iters": args.iters, "warmup": args.warmup, "max_seconds": args.max_seconds,
        "output": args.output, "triton_repo": args.triton_repo,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})  # flags override the file
    try:
        cfg = RunConfig(**settings)
    except TypeError as exc:
        raise UsageError(f"bad setting: {exc}") from None
    result = run_pipeline(cfg, ["resdeploy", *args.argv])
    cols, rows = summary_rows(result.report)
    ref = result.report["reference"]
    _print_table(f"{cfg.model} on {cfg.val}: FP32 torch top-1 {100 * ref['top1']:.2f} % over {ref['n']} images",
                 cols, rows)
    total = sum(s["seconds"] for s in result.stages)
    reused = sum(1 for s in result.stages if s.get("reused"))
    print(f"report: {result.outdir / 'report.md'} (+ report.json, manifest.json, plots/); "
          f"{len(result.stages)} stages in {total:.0f} s, {reused} reused")
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
        print(f"  quantizable layers: {r.units}; ops: " + ", ".join(f"{k} {v}" for k, v in r.ops.items() if k in ("QuantizeLinear", "DequantizeLinear", "Cast")))
    if r.verify:
        worst = max(c["max_abs_err"] for c in r.verify["checks"])
        print(f"  verified against FP32 on seeded inputs: max |error| {worst:.3g}")
    if r.budget:
        b = r.budget
        print(f"  top-1 on {b.get('data', args.val)}: {100 * b['top1']:.2f}% vs FP32 {100 * b['fp32_top1']:.2f}% "
              f"(drop {b['drop_pp']:.3f} pp, budget {b['max_drop_pp']} pp)")
    if r.fallback:
        print(f"  fell back to higher precision ({len(r.fallback)}): {', '.join(r.fallback)}")
    print(f"  report: {report_path(r.path)}; {r.seconds:.1f} s")
    return 0


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .export import ExportConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(
        prog="resdeploy",
        description="A trained ResNet from PyTorch to a fast, verified edge deployment (ONNX, INT8, TensorRT).",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"resdeploy {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("export", help="torch model -> verified, BN-folded, simplified ONNX", formatter_class=fmt)
    p.add_argument("model", metavar="MODEL", help="resnet18|...|resnext101_64x4d, zoo:NAME, a module file, or pkg.mod:factory")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    _add_model_options(p)
    p.add_argument("--opset", type=int, default=_default(ExportConfig, "opset"), help="ONNX opset (TensorRT 8.6 reads <= 17)")
    p.add_argument("--batch", type=_batch_spec, default=_default(ExportConfig, "batch"), metavar="dynamic|N",
                   help="batch dimension (None = dynamic)")
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNormalization layers")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("fold-bn", help="fold Conv -> BatchNormalization pairs of an existing ONNX", formatter_class=fmt)
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.set_defaults(func=cmd_fold_bn)

    from .quantize import CALIB_METHODS, PRECISIONS, TARGETS, QuantizeConfig

    p = sub.add_parser("quantize", help="FP16, or INT8 Q/DQ by calibration for TensorRT or the CPU", formatter_class=fmt)
    p.add_argument("input", metavar="IN.onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--precision", required=True, choices=PRECISIONS)
    p.add_argument("--target", default=_default(QuantizeConfig, "target"), choices=TARGETS,
                   help="tensorrt: symmetric s8, TensorRT placement; cpu: u8/s8, what ONNX Runtime runs fastest")
    p.add_argument("--calib", metavar="DATA", help="calibration data (required for int8), e.g. fashion-mnist:train")
    p.add_argument("--calib-size", type=_positive_int, default=_default(QuantizeConfig, "calib_size"), help="images, spread over classes")
    p.add_argument("--calib-method", default=_default(QuantizeConfig, "calib_method"), choices=CALIB_METHODS,
                   help="activation threshold: percentile 99.99%%, TensorRT's entropy (KL), minmax or mse")
    p.add_argument("--seed", type=int, default=_default(QuantizeConfig, "seed"), help="calibration image selection")
    p.add_argument("--val", metavar="DATA", help="validation data for --max-drop")
    p.add_argument("--max-drop", type=float, metavar="PP", help="largest top-1 drop allowed, in percentage points")
    p.add_argument("--val-limit", type=_positive_int, help="first N validation images only")
    p.add_argument("--fp32-remainder", action="store_true", help="tensorrt target: keep unquantized layers FP32, not FP16")
    p.set_defaults(func=cmd_quantize)

    from .build import BuildConfig

    p = sub.add_parser("build", help="TensorRT engine (.plan) with the recipe of the installed TensorRT", formatter_class=fmt)
    p.add_argument("input", metavar="IN.onnx", help="FP32, FP16 or INT8 Q/DQ ONNX from resdeploy")
    p.add_argument("-o", "--output", required=True, metavar="OUT.plan")
    p.add_argument("--min-batch", type=_positive_int, default=_default(BuildConfig, "min_batch"), help="profile minimum batch")
    p.add_argument("--opt-batch", type=_positive_int, default=_default(BuildConfig, "opt_batch"), help="batch TensorRT tunes for")
    p.add_argument("--max-batch", type=_positive_int, default=_default(BuildConfig, "max_batch"), help="profile maximum batch")
    p.add_argument("--workspace", type=_positive_int, default=_default(BuildConfig, "workspace_mib"), metavar="MiB",
                   help="workspace memory pool limit (None: TensorRT's default; keep it small on Jetson)")
    p.add_argument("--timing-cache", metavar="PATH", help="loaded if present, saved after the build")
    p.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N with GPU fallback (Jetson; static batch)")
    p.add_argument("--print-trtexec", action="store_true", help="print the equivalent trtexec command instead (no TensorRT needed)")
    p.add_argument("--trt-version", choices=("8.6", "10", "11"),
                   help="with --print-trtexec: the TensorRT generation (default: the installed one, else 10)")
    p.set_defaults(func=cmd_build)

    from .pipeline import RunConfig

    p = sub.add_parser("run", help="the whole pipeline: export, quantize, build, eval, bench, report", formatter_class=fmt)
    p.add_argument("config", nargs="?", metavar="CONFIG.toml", help="settings with the same names as the flags (flags win)")
    p.add_argument("--model", help=f"MODEL spec (default: {_default(RunConfig, 'model')})")
    _add_model_options(p)
    p.add_argument("--calib", help=f"calibration DATA (default: {_default(RunConfig, 'calib')})")
    p.add_argument("--calib-size", type=_positive_int, help=f"(default: {_default(RunConfig, 'calib_size')})")
    p.add_argument("--calib-method", help=f"(default: {_default(RunConfig, 'calib_method')})")
    p.add_argument("--val", help=f"validation DATA (default: {_default(RunConfig, 'val')})")
    p.add_argument("--val-limit", type=_positive_int, help="first N validation images only (default: all)")
    p.add_argument("--max-drop", type=float, metavar="PP", help="INT8 top-1 budget in percentage points (default: none)")
    p.add_argument("--precisions", help=f"(default: {','.join(_default(RunConfig, 'precisions'))})")
    p.add_argument("--targets", help=f"INT8 targets (default: {','.join(_default(RunConfig, 'targets'))})")
    p.add_argument("--batch", type=_batches, help=f"bench batch sizes (default: {','.join(map(str, _default(RunConfig, 'batches')))})")
    p.add_argument("--iters", type=_positive_int, help=f"(default: {_default(RunConfig, 'iters')})")
    p.add_argument("--warmup", type=int, help=f"(default: {_default(RunConfig, 'warmup')})")
    p.add_argument("--max-seconds", type=float, help=f"bench time budget per batch size (default: {_default(RunConfig, 'max_seconds')})")
    p.add_argument("-o", "--output", metavar="OUTDIR", help=f"(default: {_default(RunConfig, 'output')})")
    p.add_argument("--triton-repo", metavar="DIR", help="also write a Triton model repository there")
    p.set_defaults(func=cmd_run)

    from .runtime import BACKEND_NAMES, BenchConfig, EvalConfig

    backends = ["auto", *BACKEND_NAMES]
    p = sub.add_parser("bench", help="latency percentiles and throughput per batch size", formatter_class=fmt)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".onnx, TensorRT .plan, or a MODEL spec (torch)")
    p.add_argument("--backend", default="auto", choices=backends, help="auto: .plan->tensorrt, .onnx->ort-cuda|ort-cpu, MODEL->torch")
    p.add_argument("--batch", type=_batches, default=_default(BenchConfig, "batches"), metavar="1,8", help="batch sizes")
    p.add_argument("--warmup", type=int, default=_default(BenchConfig, "warmup"), help="untimed iterations first")
    p.add_argument("--iters", type=_positive_int, default=_default(BenchConfig, "iters"), help="timed iterations per batch size")
    p.add_argument("--max-seconds", type=float, default=_default(BenchConfig, "max_seconds"),
                   help="time budget per batch size (stops early, after at least 10 iterations)")
    p.add_argument("--threads", type=_positive_int, default=_default(BenchConfig, "threads"), help="CPU threads (None: all cores)")
    p.add_argument("--in-process", action="store_true", help="time all artifacts in this process (default: one process each)")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="top-1/top-5 on a data set and agreement with the FP32 reference", formatter_class=fmt)
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT")
    p.add_argument("--data", required=True, metavar="DATA", help="fashion-mnist[:train|:test], an ImageFolder dir, or an .npz")
    p.add_argument("--reference", metavar="MODEL|FP32.onnx", help="default: the torch model named in the ONNX metadata")
    p.add_argument("--backend", default="auto", choices=backends)
    p.add_argument("--limit", type=_positive_int, default=_default(EvalConfig, "limit"), help="first N images only")
    p.add_argument("--eval-batch", type=_positive_int, default=_default(EvalConfig, "batch_size"), help="images per inference")
    p.add_argument("--threads", type=_positive_int, default=_default(EvalConfig, "threads"), help="CPU threads (None: all cores)")
    p.add_argument("--json", metavar="OUT.json")
    p.set_defaults(func=cmd_eval)
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
        return func(args)
    except ResdeployError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {first[:300]}; rerun with --debug and report it\n")
        return 1


__all__ = ["UsageError", "build_parser", "main"]
