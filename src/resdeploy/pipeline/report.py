"""OUTDIR/report.json, report.md, plots/*.png, the Triton repository and manifest.json."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__, _io
from .plots import write_plots
from .state import RunState, Variant

__all__ = ["make_report", "manifest", "summary_rows", "write_report"]

Latency = dict[tuple[str, str], list[dict[str, Any]]]
_ACCURACY_KEYS = ("top1", "top5", "agreement_top1", "n", "max_abs_logit_err", "top1_ci95", "drop_pp",
                  "drop_p_value", "drop_words")


def _accuracy_of(text: str, backend: str, accuracy: dict[str, Any]) -> dict[str, Any]:
    ref = accuracy["reference"]
    if backend in ("torch", "torch-cuda"):
        return {"top1": ref["top1"], "top5": ref["top5"], "agreement_top1": 1.0, "n": ref["n"],
                "max_abs_logit_err": 0.0, "top1_ci95": ref.get("top1_ci95")}
    r: dict[str, Any] = next((r for r in accuracy["results"] if r["artifact"] == text and r["backend"] == backend),
             next((r for r in accuracy["results"] if r["artifact"] == text), {}))
    return {k: r.get(k) for k in _ACCURACY_KEYS}


def _entry(name: str, precision: str, target: str, text: str, backend: str, results: list[dict[str, Any]],
           accuracy: dict[str, Any], torch_p50: float | None) -> dict[str, Any]:
    first = min(results, key=lambda r: r["batch"])
    lat = first["latency_ms"]
    return {
        "name": name, "precision": precision, "target": target, "backend": backend, "artifact": text,
        "accuracy": _accuracy_of(text, backend, accuracy),
        "latency_ms": {"batch": first["batch"], "p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"]},
        "throughput_ips": first["throughput_ips"],
        "speedup_vs_torch": (torch_p50 / lat["p50"]) if torch_p50 else None,
        "size_bytes": Path(text).stat().st_size if Path(text).is_file() else None,
        "by_batch": [{"batch": r["batch"], **{k: r["latency_ms"][k] for k in ("p50", "p90", "p99", "mean")},
                      "throughput_ips": r["throughput_ips"], "iters": r["iters"]} for r in results],
    }


def variant_entries(model: str, batches: tuple[int, ...], accuracy: dict[str, Any], latency: Latency,
                    variants: list[Variant]) -> list[dict[str, Any]]:
    """One entry per (artifact, backend); ``fastest`` marks each artifact's fastest CPU backend."""
    by_path = {str(v.path): v for v in variants}
    torch_b1 = next((r for r in latency.get((model, "torch"), []) if r["batch"] == min(batches)), None)
    torch_p50 = torch_b1["latency_ms"]["p50"] if torch_b1 else None
    entries = []
    for (text, backend), results in latency.items():
        if backend in ("torch", "torch-cuda"):
            entries.append(_entry("torch-fp32", "fp32", "cpu", text, backend, results, accuracy, torch_p50))
            continue
        v = by_path[text]
        name = v.name + ("-engine" if text.endswith(".plan") else "")
        entries.append(_entry(name, v.precision, v.target, text, backend, results, accuracy, torch_p50))
    for text in {e["artifact"] for e in entries}:
        cpu = [e for e in entries if e["artifact"] == text and e["backend"] in ("ort-cpu", "ov-cpu", "torch")]
        if len(cpu) > 1:
            min(cpu, key=lambda e: e["latency_ms"]["p50"])["fastest"] = True
    return entries


def summary_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary table a person reads first (also printed by the CLI)."""
    batches = sorted({b["batch"] for v in report["variants"] for b in v["by_batch"]})
    cols = ["variant", "precision", "target", "backend", "top-1 %", "95% CI", "agree %",
            *[f"p50 ms b{b}" for b in batches], f"img/s b{batches[-1]}", "x torch", "MB"]
    rows = []
    for v in report["variants"]:
        a = v["accuracy"]
        by = {b["batch"]: b for b in v["by_batch"]}
        ci = a.get("top1_ci95")
        rows.append([
            v["name"], v["precision"], v["target"], v["backend"] + (" *" if v.get("fastest") else ""),
            f"{100 * a['top1']:.2f}" if a.get("top1") is not None else "-",
            f"{100 * ci[0]:.2f}-{100 * ci[1]:.2f}" if ci else "-",
            f"{100 * a['agreement_top1']:.2f}" if a.get("agreement_top1") is not None else "-",
            *[f"{by[b]['p50']:.2f}" if b in by else "-" for b in batches],
            f"{by[batches[-1]]['throughput_ips']:.0f}" if batches[-1] in by else "-",
            f"{v['speedup_vs_torch']:.1f}" if v.get("speedup_vs_torch") else "-",
            f"{v['size_bytes'] / 1e6:.1f}" if v.get("size_bytes") else "-",
        ])
    return cols, rows


def _md_table(cols: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    return ["| " + " | ".join(cols) + " |",
            "| " + " | ".join("---" if i < left else "---:" for i in range(len(cols))) + " |",
            *["| " + " | ".join(r) + " |" for r in rows]]


def _md_accuracy(report: dict[str, Any]) -> list[str]:
    """Whether each variant's drop is distinguishable from zero, in words."""
    lines = ["## Accuracy against FP32", ""]
    seen = set()
    for v in report["variants"]:
        words = v["accuracy"].get("drop_words")
        if words and v["artifact"] not in seen:
            seen.add(v["artifact"])
            lines.append(f"- **{v['name']}**: {words}.")
    return [*lines, ""]


def _md_quantization(report: dict[str, Any]) -> list[str]:
    lines = ["## Quantization", ""]
    for name, q in report["quantize"].items():
        calib = q.get("calib") or {}
        line = f"- **{name}**: {q['precision']} for {q['target']}"
        if calib:
            line += f", calibration {calib['images']} images of {calib['data']} ({calib['method']}, seed {calib['seed']})"
        if q.get("fallback"):
            line += f"; fell back: {', '.join(q['fallback'])}"
        if q.get("budget") and q["budget"].get("max_drop_pp") is not None:
            line += f"; top-1 drop {q['budget']['drop_pp']:.3f} pp (budget {q['budget']['max_drop_pp']} pp)"
        lines.append(line)
    for name, q in report["quantize"].items():
        lines += _md_layers(name, q)
    if any(q.get("layers") for q in report["quantize"].values()):
        lines += ["![per-layer SQNR along depth](plots/layer_sqnr.png)", ""]
    return lines


def _md_layers(name: str, q: dict[str, Any]) -> list[str]:
    """The ten layers that drift most from FP32, beside the sensitivity ranking --max-drop used."""
    layers = q.get("layers") or []
    if not layers:
        return []
    worst = sorted(layers, key=lambda x: x["sqnr_db"])[:10]
    rank = {s["node"]: i + 1 for i, s in enumerate((q.get("budget") or {}).get("sensitivity") or [])}
    rows = [[x["module"], x["node"], x["kind"], f"{x['sqnr_db']:.1f}", "yes" if x["fallback"] else "no",
             str(rank.get(x["node"], "-"))] for x in worst]
    return ["", f"### {name}: the ten layers that drift most from FP32 ({q['layers_images']} images)", "",
            *_md_table(["module", "ONNX node", "kind", "SQNR dB", "fell back", "sensitivity rank"], rows, left=3),
            ""]


def _markdown(report: dict[str, Any]) -> str:
    cols, rows = summary_rows(report)
    ref = report["reference"]
    lo, hi = ref.get("top1_ci95", (ref["top1"], ref["top1"]))
    exp = report["model"]["export"]
    onnx_source = exp.get("source") == "onnx"  # an FP32 ONNX from another tool: itself the reference
    lines = [
        f"# resdeploy report: {report['model']['spec']}", "",
        f"Validation: {report['data']['val']} ({ref['n']} images). FP32 {'ONNX (as given)' if onnx_source else 'torch'} "
        "reference: top-1 "
        f"{100 * ref['top1']:.2f} % (95% CI {100 * lo:.2f}-{100 * hi:.2f}), top-5 {100 * ref['top5']:.2f} %. "
        f"Latency: p50 per batch, each artifact timed alone in its own process on {report['env']['cpu']} "
        f"({report['env']['threads']} threads); * marks each artifact's fastest CPU backend.", "",
        *_md_table(cols, rows, left=4), "",
        "![latency per batch size](plots/latency_by_batch.png)",
        "![accuracy against latency](plots/accuracy_vs_latency.png)", "",
        *_md_accuracy(report),
        "## Stages", "",
        *_md_table(["stage", "seconds", "artifact", "note"], [
            [s["name"], f"{s['seconds']:.1f}", Path(s["artifact"]).name if s["artifact"] else "-",
             "reused (inputs unchanged)" if s.get("reused") else s.get("skipped", "")] for s in report["stages"]]),
        "", *_md_gpu(report), *_md_quantization(report),
    ]
    lines += [
        "", "## Export" if not onnx_source else "## The ONNX taken in", "",
        f"BatchNorm folded: {exp['bn_folded_torch'] + exp['bn_folded_onnx']} of {exp['bn_in_model']}; nodes "
        f"{exp['nodes_exported']} -> {exp['nodes_final']}; max |error| against "
        f"{'the file as given' if onnx_source else 'torch'} "
        f"{max(c['max_abs_err'] for c in exp['checks']):.2e}.", "",
        "## TensorRT", "",
        "`sh trtexec.sh` (also in `bundle/`) builds every TensorRT-targeted variant (not the cpu-profile INT8, "
        "which no TensorRT parser reads) with the recipe of the installed TensorRT (8.6, 10.x, 11.x, or "
        "TensorRT-RTX with `sh trtexec.sh rtx`); `resdeploy verify bundle/ model.plan` then checks the engine on the device.",
        *[f"- build skipped: {s['skipped']}" for s in report["stages"] if s.get("skipped")],
        *[f"- {e['variant']}: built by {e['builder']} {e['builder_version']} -> {Path(e['artifact']).name}"
          f" (compute capabilities: {e['compute_capabilities']}; {e['build_seconds']} s)" for e in report.get("engines", [])],
        "", "## Environment", "", "```", json.dumps(report["env"], indent=2), "```", "",
    ]
    return "\n".join(lines)


def gpu_status(latency: Latency, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """The GPUs seen, and each GPU backend: measured in this run, or why not with the command that
    installs what it lacks."""
    from ..runtime import backend_names, get_backend

    ran = {backend for _, backend in latency}
    backends = []
    for name in backend_names():
        impl = get_backend(name)
        if impl.device != "cuda":
            continue
        reason = None if name in ran else (impl.unavailable_reason() or "no artifact of this run runs on it")
        backends.append({"name": name, "ran": name in ran, "missing": reason})
    return {"devices": gpus, "backends": backends}


def _md_gpu(report: dict[str, Any]) -> list[str]:
    gpu = report.get("gpu") or {}
    devices = gpu.get("devices") or []
    named = [f"{d['name']} (compute capability {d['compute_capability']})" for d in devices]
    head = f"GPU: {', '.join(named)}." if named else "No CUDA GPU is visible here: every figure above is a CPU figure."
    lines = ["## GPU", "", head, ""]
    for b in gpu.get("backends", []):
        lines.append(f"- {b['name']}: " + ("measured in this run" if b["ran"] else f"not run: {b['missing']}"))
    return [*lines, ""]


def manifest(state: RunState, env: dict[str, Any]) -> dict[str, Any]:
    """Every file of OUTDIR (and the Triton repository) with its sha256 and size, the versions,
    the command line and the settings."""
    out = state.out
    extra_roots = [Path(state.config.triton_repo)] if state.config.triton_repo else []
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    for root in extra_roots:
        files += sorted(p for p in root.rglob("*") if p.is_file())
    return {
        "command": " ".join(state.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resdeploy_version": __version__,
        "python": platform.python_version(),
        "versions": env["versions"],
        "config": state.config.settings(),
        "artifacts": [
            {"path": str(p.relative_to(out)) if p.is_relative_to(out) else str(p.resolve()),
             "sha256": _io.sha256_file(p), "bytes": p.stat().st_size}
            for p in files
        ],
    }


def make_report(state: RunState, export_info: dict[str, Any], quant_reports: dict[str, Any],
                  accuracy: dict[str, Any], latency: Latency) -> dict[str, Any]:
    """The run's report from its stages' results; writes the plots and the Triton repository."""
    from ..device import environment

    cfg, out = state.config, state.out
    env = environment(None, "one process per artifact")
    report = {
        "model": {"spec": cfg.model.spec, "weights": cfg.model.weights, "export": json.loads(json.dumps(export_info))},
        "reference": {k: accuracy["reference"][k] for k in ("artifact", "top1", "top5", "n", "top1_ci95")
                      if k in accuracy["reference"]},
        "data": {"calib": cfg.calib, "val": cfg.val},
        "stages": state.stages,
        "variants": variant_entries(cfg.model.spec, cfg.bench.batches, accuracy, latency, state.artifacts),
        "engines": state.built,
        "quantize": quant_reports,
        "eval_timing": accuracy.get("timing"),
        "gpu": gpu_status(latency, env.get("gpus", [])),
        "env": env,
    }
    write_plots(out, report)
    if cfg.triton_repo:
        from .triton import write_repository

        repo = _io.check_outdir(cfg.triton_repo)
        write_repository(repo, _triton_models(state))
        report["triton_repo"] = str(repo)
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    """OUTDIR/report.json and report.md, once per run, after every stage (the bundle too) ran."""
    _io.write_json(out / "report.json", report)
    _io.write_text(out / "report.md", _markdown(report))


def _triton_models(state: RunState) -> list[Any]:
    from ..engine import inspect_onnx, load_record
    from ..runtime import Artifact
    from .triton import TritonModel

    models = []
    for v in state.artifacts:
        if v.path is None or v.backend == "tensorrt-rtx":  # Triton's tensorrt_plan is TensorRT's, not TensorRT-RTX's
            continue
        art = Artifact.resolve(str(v.path))
        pre = art.preprocess()
        num_classes = int(art.metadata.get("resdeploy.num_classes", "0"))
        max_batch = state.config.build.max_batch
        if art.kind == "plan":
            rec = load_record(v.path) or {}
            input_name, profile = next(iter(rec["profile"].items()))
            max_batch = profile["max"][0]
            source = Path(rec.get("source_onnx", {}).get("path", ""))
            output_name = _output_name(source) if source.suffix == ".onnx" and source.is_file() else "logits"
        else:
            input_name = inspect_onnx(v.path).input_name
            output_name = _output_name(v.path)
        suffix = "-plan" if art.kind == "plan" else ""
        models.append(TritonModel(
            name=f"{state.slug}-{v.name}{suffix}", artifact=v.path, input_name=input_name,
            input_dims=pre.input_shape, output_name=output_name, num_classes=num_classes, max_batch_size=max_batch,
            preferred_batches=tuple(b for b in state.config.bench.batches if b <= max_batch),
        ))
    return models


def _output_name(onnx_path: Path) -> str:
    """The logits output's name (``logits`` in resdeploy's exports; whatever another tool called it)."""
    from .. import _onnx

    return str(_onnx.load(onnx_path).graph.output[0].name)
