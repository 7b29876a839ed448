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


def _param(func: Callable[..., Any], name: str) -> Any:
    """A library function's keyword default (for options no stage config holds)."""
    import inspect

    return inspect.signature(func).parameters[name].default


def _progress_on(args: argparse.Namespace) -> bool:
    """Progress bars: on unless --quiet (tqdm itself stays silent where stderr is not a terminal)."""
    return not args.quiet


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


def _input_size(text: str) -> int | tuple[int, int]:
    from .preprocess import parse_size

    try:
        return parse_size(text)
    except UsageError:
        raise argparse.ArgumentTypeError(f"{text!r}: give S or H,W in pixels, e.g. 224 or 224,160") from None


def _add_preprocess_options(p: argparse.ArgumentParser, default: str = "from the model") -> None:
    p.add_argument("--input-size", type=_input_size, metavar="S|H,W",
                   help=f"input side S (square) or height,width in pixels (default: {default})")
    p.add_argument("--mean", help="normalisation mean, one value per channel: R,G,B, or V for grey "
                                  f"(default: {default}{', ImageNet for builders' if default == 'from the model' else ''})")
    p.add_argument("--std", help=f"normalisation std, one value per channel (default: {default})")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="torchvision weights enum name (e.g. IMAGENET1K_V2) or a state_dict .pth path")
    p.add_argument("--num-classes", type=_positive_int, help="classifier width (default: from the weights, else 1000)")
    _add_preprocess_options(p)
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a MODEL file that is a pickled module (unpickling can run any code in it)")


def _given_preprocess(args: argparse.Namespace) -> Any:
    """--input-size/--mean/--std, for an ONNX from another tool (no resdeploy metadata)."""
    from .preprocess import GivenPreprocess, parse_channel_values

    return GivenPreprocess(args.input_size, parse_channel_values(args.mean, "mean") if args.mean else None,
                           parse_channel_values(args.std, "std") if args.std else None)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """--input-size/--mean/--std as the library's keyword arguments."""
    given = _given_preprocess(args)
    return {"input_size": given.input_size, "mean": given.mean, "std": given.std}


def _model_spec(args: argparse.Namespace, spec: str | None = None) -> Any:
    from .models import ModelSpec

    given = _given_preprocess(args)
    return ModelSpec(
        spec=spec or args.model,
        weights=args.weights,
        num_classes=args.num_classes,
        input_size=given.input_size,
        mean=given.mean,
        std=given.std,
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


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The MODEL options (--weights, --num-classes, ...) as the library's keyword arguments."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(_model_spec(args)).items() if k != "spec"}


def cmd_export(args: argparse.Namespace) -> int:
    from .api import export_model

    r = export_model(args.model, args.output, **_model_options(args), opset=args.opset, batch=args.batch,
                     fold_bn=not args.no_fold_bn, simplify=not args.no_simplify)
    info = r.to_dict()
    checks = ", ".join(f"batch {c.batch}: {c.max_abs_err:.2e} ({c.relative_err:.1e} rel)" for c in r.checks)
    print(f"exported {r.model} -> {r.path}")
    print(f"  opset {args.opset}, batch {'dynamic' if args.batch is None else args.batch}, "
          f"input {info['input_shape']}, {info['num_classes']} classes")
    print(f"  BatchNorm folded: {r.bn_folded_torch} in torch, {r.bn_folded_onnx} in ONNX (model had {r.bn_in_model})")
    print(f"  nodes: {r.nodes_exported} exported -> {r.nodes_final} after "
          f"{'onnxsim' if r.simplified else 'folding (onnxsim skipped)'}")
    print(f"  verified against torch in ONNX Runtime, max |error|: {checks}")
    print(f"  {r.seconds:.1f} s")
    return 0


def cmd_fold_bn(args: argparse.Namespace) -> int:
    from .api import fold_bn

    r = fold_bn(args.input, args.output)
    print(f"folded {r.folded} BatchNormalization node(s) into Conv -> {r.path}"
          + (f"; {r.remaining} left (not after a Conv)" if r.remaining else ""))
    if r.training_mode_reset:
        print(f"  {r.training_mode_reset} training-mode BatchNormalization node(s) set to running statistics")
    print("  verified against the input in ONNX Runtime, max |error|: "
          + ", ".join(f"batch {c.batch}: {c.max_abs_err:.2e}" for c in r.checks))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .api import quantize_model
    from .quantize import report_path

    r = quantize_model(args.input, args.output, precision=args.precision, target=args.target, calib=args.calib,
                       calib_size=args.calib_size, calib_method=args.calib_method, seed=args.seed, val=args.val,
                       max_drop=args.max_drop, val_limit=args.val_limit, fp32_remainder=args.fp32_remainder,
                       progress=_progress_on(args), **_given_options(args))
    what = "FP16 (inputs and outputs FP32)" if r.precision == "fp16" else f"INT8 Q/DQ for {r.target}"
    print(f"quantized {args.input} -> {r.path}: {what}")
    if r.calib:
        print(f"  calibration: {r.calib['images']} images of {r.calib['data']}, {r.calib['method']}, seed {r.calib['seed']}")
        if "auto" in r.calib and r.calib["auto"].get("scores"):
            a = r.calib["auto"]
            print(f"  auto chose {a['chosen']} (mean per-image logit SQNR against FP32 on {a['holdout_images']} held-out calibration "
                  "images: " + ", ".join(f"{m} {v['logit_sqnr_db']:.1f} dB" for m, v in a["scores"].items()) + ")")
        qdq = ", ".join(f"{k} {v}" for k, v in r.ops.items() if k in ("QuantizeLinear", "DequantizeLinear", "Cast"))
        print(f"  quantizable layers: {r.units}; ops: {qdq}")
    if r.verify:
        worst = max(c["max_abs_err"] for c in r.verify["checks"])
        print(f"  verified against FP32 on seeded inputs: max |error| {worst:.3g}")
    if r.budget:
        b = r.budget
        budget = f"budget {b['max_drop_pp']} pp" if b.get("max_drop_pp") is not None else "no --max-drop budget"
        ci = (f", 95% interval {b['drop_ci95_pp'][0]:.2f} to {b['drop_ci95_pp'][1]:.2f} pp"
              if b.get("drop_ci95_pp") else "")
        agree = f"; agreement with FP32 {100 * b['agreement']:.2f}%" if b.get("agreement") is not None else ""
        print(f"  top-1 on {b.get('data', args.val)}: {100 * b['top1']:.2f}% vs FP32 {100 * b['fp32_top1']:.2f}% "
              f"(drop {b['drop_pp']:.3f} pp{ci}, {budget}){agree}")
    if r.fallback:
        print(f"  fell back to higher precision ({len(r.fallback)}): {', '.join(r.fallback)}")
    if r.layers:
        worst3 = sorted(r.layers, key=lambda x: x["sqnr_db"])[:3]
        print("  lowest SQNR against FP32: " + ", ".join(
            f"{x['module']} ({x['kind']}) {x['sqnr_db']:.1f} dB" for x in worst3)
            + (f" (on {r.layers_sample})" if r.layers_sample else ""))
    print(f"  report: {report_path(r.path)}; {r.seconds:.1f} s")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .api import build_engine, engine_command
    from .api._stages import recipe_name

    options = {"runtime": args.runtime, "min_batch": args.min_batch, "opt_batch": args.opt_batch,
               "max_batch": args.max_batch, "workspace": args.workspace, "timing_cache": args.timing_cache,
               "dla_core": args.dla_core, "compute_capability": args.compute_capability or ()}
    if args.print_trtexec:
        c = engine_command(args.input, args.output, trt_version=args.trt_version, **options)
        print(f"# {c.label} {c.version} ({c.version_source}), {c.precision} ONNX; recipe for {c.recipe}")
        for note in c.notes:
            print(f"# {note}")
        print(c.text)
        return 0
    if args.trt_version:
        raise UsageError("--trt-version goes with --print-trtexec; a build uses the installed TensorRT")
    r = build_engine(args.input, args.output, **options)
    rec = r.record
    where = f"on {rec['gpu']} (sm {rec['compute_capability']})" if rec["gpu"] else "ahead of time, without a GPU"
    print(f"built {r.plan} with {rec['builder']['name']} {rec['builder']['version']} {where}; "
          f"compute capabilities: {rec['compute_capabilities_targeted']}")
    print(f"  {rec['precision']} ONNX, recipe for {recipe_name(rec['builder']['name'], rec['recipe']['generation'])}: "
          f"strongly typed {rec['recipe']['strongly_typed']}, flags +{rec['recipe']['set_flags']} -{rec['recipe']['cleared_flags']}")
    print(f"  profile {rec['profile']}; record {r.plan}.json; {r.seconds:.1f} s")
    return 0


def _bench_rows(results: list[Any]) -> list[list[str]]:
    return [[_short(r.artifact), r.backend, r.precision, str(r.batch), f"{r.latency_ms['p50']:.2f}",
             f"{r.latency_ms['p90']:.2f}", f"{r.latency_ms['p99']:.2f}", f"{r.latency_ms['mean']:.2f}",
             f"{r.throughput_ips:.1f}", str(r.iters)] for r in results]


def cmd_bench(args: argparse.Namespace) -> int:
    from ._io import check_writable
    from .api import bench

    if args.json:
        check_writable(args.json)
    report = bench(args.artifacts, backend=args.backend, batches=args.batch, warmup=args.warmup, iters=args.iters,
                   max_seconds=args.max_seconds, threads=args.threads, in_process=args.in_process,
                   trust_pickle=args.trust_pickle)
    results, env = report.results, report.env
    _print_table(f"latency (ms) on {env['cpu']}, {env['threads']} threads, {env['isolation']}",
                 ["artifact", "backend", "precision", "batch", "p50", "p90", "p99", "mean", "img/s", "iters"],
                 _bench_rows(results))
    gpu = [r for r in results if r.gpu_compute_ms is not None]
    if gpu:  # trtexec's breakdown, so the figures compare with its "Latency", "GPU Compute Time", "Enqueue Time"
        _print_table("GPU figures as trtexec reports them (ms, median iteration: H2D + compute + D2H = p50)",
                     ["artifact", "backend", "batch", "H2D", "GPU compute", "D2H", "enqueue", "host memory"],
                     [[_short(r.artifact), r.backend, str(r.batch), f"{r.h2d_ms:.3f}", f"{r.gpu_compute_ms:.3f}",
                       f"{r.d2h_ms:.3f}", f"{r.enqueue_ms:.3f}", str(r.host_memory)] for r in gpu])
    if args.json:
        report.to_json(args.json)
        print(f"wrote {args.json}")
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def cmd_eval(args: argparse.Namespace) -> int:
    from ._io import check_writable
    from .api import evaluate

    if args.json:
        check_writable(args.json)
    report = evaluate(args.artifacts, args.data, reference=args.reference, backend=args.backend, limit=args.limit,
                      eval_batch=args.eval_batch, threads=args.threads, workers=args.workers,
                      trust_pickle=args.trust_pickle, progress=_progress_on(args), **_given_options(args))
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
        report.to_json(args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .api import run_pipeline
    from .pipeline import SETTINGS, summary_rows

    given = vars(args)
    flags = {name: given.get(name) for name in SETTINGS if name != "batches"}
    flags["trust_pickle"] = True if args.trust_pickle else None  # a flag cannot unset the file's true
    # --batch fills `batches` (FLAG_ALIASES), and an error names the flag as given
    result = run_pipeline(args.config, **flags, batch=args.batch, argv=["resdeploy", *args.argv],
                          progress=_progress_on(args))
    cfg = result.config
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
    from .api import make_bundle

    bundle = make_bundle(args.outdir, images=args.images, seed=args.seed, output=args.output)
    path, size = bundle.path, bundle.size_bytes / 1e6
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
    from ._io import check_writable
    from .api import verify_bundle

    if args.json:
        check_writable(args.json)
    report = verify_bundle(args.bundle, args.artifact, variant=args.variant, backend=args.backend,
                           scale_tolerance=args.scale_tolerance)
    _print_table(f"verify against {report.bundle['path']} ({report.bundle['golden']['n']} golden images)",
                 ["artifact", "variant", "backend", "n", "agree expected %", "agree FP32 %", "top-1 %",
                  "max |dlogit|", "result", "first divergent layer"], _verify_rows(report))
    for r in report.results:
        d = r.first_divergent
        if d is not None and d.layer:  # a TensorRT plan: the fused engine layer and every ONNX node it runs
            print(f"  {_short(r.artifact)}: first divergent fused layer {d.layer} = {' + '.join(d.layer_nodes)} "
                  f"({', '.join(d.layer_modules)})")
        if r.hint:
            print(f"  {_short(r.artifact)} failed; compare it layer by layer on the device with:\n    {r.hint}")
    for warning in report.env.get("warnings", []):
        log.warning("%s", warning)
    if args.json:
        report.to_json(args.json)
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
                   help="activation threshold: auto (each method tried on held-out calibration images, the closest "
                        "to FP32 kept), mse (the clip minimising the quantization error), percentile 99.99%%, "
                        "TensorRT's entropy (KL) or minmax")
    p.add_argument("--seed", type=int, default=_default(QuantizeConfig, "seed"), help="calibration image selection")
    p.add_argument("--val", metavar="DATA", help="validation data for --max-drop and the per-layer report")
    p.add_argument("--max-drop", type=float, metavar="PP", help="largest top-1 drop allowed, in percentage points")
    p.add_argument("--val-limit", type=_positive_int, help="first N validation images only")
    p.add_argument("--fp32-remainder", action="store_true", help="tensorrt target: keep unquantized layers FP32, not FP16")
    _add_preprocess_options(p, "from the ONNX metadata; required for an ONNX from another tool")
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
    _add_preprocess_options(p, "from the ONNX metadata; required for an ONNX from another tool")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    p.set_defaults(func=cmd_eval)


def _add_bundle(sub: Sub) -> None:
    from .api import make_bundle

    p = sub.add_parser("bundle", help="the deploy bundle of a run: ONNX variants, golden images, expected outputs",
                       formatter_class=_Help)
    p.add_argument("outdir", metavar="OUTDIR", help="a `resdeploy run` output folder")
    p.add_argument("--images", type=_positive_int, default=_param(make_bundle, "images"),
                   help="golden images, class-balanced and seeded")
    p.add_argument("--seed", type=int, default=_param(make_bundle, "seed"), help="golden image selection")
    p.add_argument("-o", "--output", metavar="DIR", help="bundle folder (default: OUTDIR/bundle)")
    p.set_defaults(func=cmd_bundle)


def _add_verify(sub: Sub) -> None:
    from .api import verify_bundle
    from .runtime import backend_help, backend_names

    p = sub.add_parser("verify", help="on the device: check artifacts against the bundle's expected outputs",
                       formatter_class=_Help)
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle/ folder written by `run` or `bundle`")
    p.add_argument("artifact", nargs="?", metavar="ARTIFACT",
                   help="a .plan built on the device, or any .onnx (default: every bundled ONNX on every backend here)")
    p.add_argument("--variant", metavar="NAME", help="the variant ARTIFACT implements (default: from its source sha256)")
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()], help=backend_help())
    p.add_argument("--scale-tolerance", type=float, default=_param(verify_bundle, "scale_tolerance"), metavar="F",
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
