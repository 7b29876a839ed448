"""OUTDIR/report.json, report.md, plots/*.png, the Triton repository and manifest.json."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__, _io
from .config import RunConfig

__all__ = ["summary_rows", "write_outputs"]


def _variant_entries(
    cfg: RunConfig,
    accuracy: dict[str, Any],
    latency: dict[tuple[str, str], list[dict[str, Any]]],
    variants: list[Any],
) -> list[dict[str, Any]]:
    by_path = {str(v.path): v for v in variants}
    acc = {r["artifact"]: r for r in accuracy["results"]}
    ref = accuracy["reference"]
    torch_b1 = next((r for r in latency.get((cfg.model, "torch"), []) if r["batch"] == min(cfg.batches)), None)
    entries = []
    for (text, backend), results in latency.items():
        v = by_path.get(text)
        if backend == "torch":
            name, precision, target = "torch-fp32", "fp32", "cpu"
            a = {"top1": ref["top1"], "top5": ref["top5"], "agreement_top1": 1.0, "n": ref["n"], "max_abs_logit_err": 0.0}
        else:
            assert v is not None
            name, precision, target = v.name + ("-engine" if text.endswith(".plan") else ""), v.precision, v.target
            r = acc.get(text, {})
            a = {k: r.get(k) for k in ("top1", "top5", "agreement_top1", "n", "max_abs_logit_err")}
        first = min(results, key=lambda r: r["batch"])
        lat = first["latency_ms"]
        entries.append({
            "name": name, "precision": precision, "target": target, "backend": backend, "artifact": text,
            "accuracy": a,
            "latency_ms": {"batch": first["batch"], "p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"]},
            "throughput_ips": first["throughput_ips"],
            "speedup_vs_torch": (torch_b1["latency_ms"]["p50"] / lat["p50"]) if torch_b1 else None,
            "size_bytes": Path(text).stat().st_size if Path(text).is_file() else None,
            "by_batch": [{"batch": r["batch"], **{k: r["latency_ms"][k] for k in ("p50", "p90", "p99", "mean")},
                          "throughput_ips": r["throughput_ips"], "iters": r["iters"]} for r in results],
        })
    return entries


def summary_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary table a person reads first (also printed by the CLI)."""
    batches = sorted({b["batch"] for v in report["variants"] for b in v["by_batch"]})
    cols = ["variant", "precision", "target", "backend", "top-1 %", "agree %",
            *[f"p50 ms b{b}" for b in batches], f"img/s b{batches[-1]}", "x torch", "MB"]
    rows = []
    for v in report["variants"]:
        a = v["accuracy"]
        by = {b["batch"]: b for b in v["by_batch"]}
        rows.append([
            v["name"], v["precision"], v["target"], v["backend"],
            f"{100 * a['top1']:.2f}" if a.get("top1") is not None else "-",
            f"{100 * a['agreement_top1']:.2f}" if a.get("agreement_top1") is not None else "-",
            *[f"{by[b]['p50']:.2f}" if b in by else "-" for b in batches],
            f"{by[batches[-1]]['throughput_ips']:.0f}" if batches[-1] in by else "-",
            f"{v['speedup_vs_torch']:.1f}" if v.get("speedup_vs_torch") else "-",
            f"{v['size_bytes'] / 1e6:.1f}" if v.get("size_bytes") else "-",
        ])
    return cols, rows


def _markdown(report: dict[str, Any]) -> str:
    cols, rows = summary_rows(report)
    ref = report["reference"]
    lines = [
        f"# resdeploy report: {report['model']['spec']}",
        "",
        f"Validation: {report['data']['val']} ({ref['n']} images). FP32 torch reference: top-1 "
        f"{100 * ref['top1']:.2f} %, top-5 {100 * ref['top5']:.2f} %. Latency: p50 per batch, each artifact timed "
        f"alone in its own process on {report['env']['cpu']} ({report['env']['threads']} threads).",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" if i < 4 else "---:" for i in range(len(cols))) + " |",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "![latency per batch size](plots/latency_by_batch.png)",
        "![accuracy against latency](plots/accuracy_vs_latency.png)",
        "",
        "## Stages",
        "",
        "| stage | seconds | artifact | note |",
        "| --- | ---: | --- | --- |",
    ]
    for s in report["stages"]:
        note = "reused (inputs unchanged)" if s.get("reused") else s.get("skipped", "")
        lines.append(f"| {s['name']} | {s['seconds']:.1f} | {Path(s['artifact']).name if s['artifact'] else '-'} | {note} |")
    lines += ["", "## Quantization", ""]
    for name, q in report["quantize"].items():
        calib = q.get("calib") or {}
        line = f"- **{name}**: {q['precision']} for {q['target']}"
        if calib:
            line += f", calibration {calib['images']} images of {calib['data']} ({calib['method']}, seed {calib['seed']})"
        if q.get("fallback"):
            line += f"; fell back: {', '.join(q['fallback'])}"
        if q.get("budget"):
            line += f"; top-1 drop {q['budget']['drop_pp']:.3f} pp (budget {q['budget']['max_drop_pp']} pp)"
        lines.append(line)
    exp = report["model"]["export"]
    lines += [
        "",
        "## Export",
        "",
        f"BatchNorm folded: {exp['bn_folded_torch'] + exp['bn_folded_onnx']} of {exp['bn_in_model']}; nodes "
        f"{exp['nodes_exported']} -> {exp['nodes_final']}; max |error| against torch "
        f"{max(c['max_abs_err'] for c in exp['checks']):.2e}.",
        "",
        "## TensorRT",
        "",
        "trtexec equivalents for TensorRT 8.6, 10 and 11 are in `trtexec.sh`.",
        *[f"- build skipped: {s['skipped']}" for s in report["stages"] if s.get("skipped")],
        "",
        "## Environment",
        "",
        "```",
        json.dumps(report["env"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _plots(out: Path, report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for v in report["variants"]:
        bs = [b["batch"] for b in v["by_batch"]]
        ax.plot(bs, [b["p50"] for b in v["by_batch"]], marker="o", label=f"{v['name']} ({v['backend']})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms, log scale)")
    ax.set_title(f"{report['model']['spec']}: latency per batch size")
    ax.set_xticks(sorted({b["batch"] for v in report["variants"] for b in v["by_batch"]}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(plots / "latency_by_batch.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for v in report["variants"]:
        top1 = v["accuracy"].get("top1")
        if top1 is None:
            continue
        ax.scatter(v["latency_ms"]["p50"], 100 * top1, s=60)
        ax.annotate(f"{v['name']} ({v['backend']})", (v["latency_ms"]["p50"], 100 * top1),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at batch {report['variants'][0]['latency_ms']['batch']} (ms, log scale)")
    ax.set_ylabel(f"top-1 % on {report['data']['val']}")
    ax.set_title("accuracy against latency (up and left is better)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    paths.append(plots / "accuracy_vs_latency.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def _manifest(out: Path, extra_roots: list[Path], cfg: RunConfig, env: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".resdeploy-"))
    for root in extra_roots:
        files += sorted(p for p in root.rglob("*") if p.is_file())
    return {
        "command": " ".join(argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resdeploy_version": __version__,
        "python": platform.python_version(),
        "versions": env["versions"],
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
        "artifacts": [
            {"path": str(p.relative_to(out)) if p.is_relative_to(out) else str(p.resolve()),
             "sha256": _io.sha256_file(p), "bytes": p.stat().st_size}
            for p in files
        ],
    }


def write_outputs(
    out: Path,
    cfg: RunConfig,
    slug: str,
    export_info: dict[str, Any],
    quant_reports: dict[str, Any],
    accuracy: dict[str, Any],
    latency: dict[tuple[str, str], list[dict[str, Any]]],
    variants: list[Any],
    stages: list[dict[str, Any]],
    env: dict[str, Any],
    argv: list[str],
) -> dict[str, Any]:
    meta = json.loads(json.dumps(export_info))
    report = {
        "model": {"spec": cfg.model, "weights": cfg.weights, "export": meta},
        "reference": {k: accuracy["reference"][k] for k in ("artifact", "top1", "top5", "n")},
        "data": {"calib": cfg.calib, "val": cfg.val},
        "stages": stages,
        "variants": _variant_entries(cfg, accuracy, latency, variants),
        "quantize": quant_reports,
        "env": env,
    }
    _plots(out, report)
    extra: list[Path] = []
    if cfg.triton_repo:
        from .triton import write_repository

        repo = Path(cfg.triton_repo)
        write_repository(repo, _triton_models(cfg, slug, variants))
        report["triton_repo"] = str(repo)
        extra.append(repo)
    _io.write_json(out / "report.json", report)
    _io.write_bytes(out / "report.md", _markdown(report).encode())
    _io.write_json(out / "manifest.json", _manifest(out, extra, cfg, env, argv))
    return report


def _triton_models(cfg: RunConfig, slug: str, variants: list[Any]) -> list[Any]:
    from ..build import inspect_onnx, load_record
    from ..runtime import Artifact
    from .triton import TritonModel

    models = []
    for v in variants:
        if v.path is None:
            continue
        art = Artifact.resolve(str(v.path))
        pre = art.preprocess()
        num_classes = int(art.metadata.get("resdeploy.num_classes", "0"))
        max_batch = cfg.max_batch
        if art.kind == "plan":
            rec = load_record(v.path) or {}
            input_name, profile = next(iter(rec["profile"].items()))
            max_batch = profile["max"][0]
        else:
            input_name = inspect_onnx(v.path).input_name
        suffix = "-plan" if art.kind == "plan" else ""
        models.append(TritonModel(
            name=f"{slug}-{v.name}{suffix}", artifact=v.path, input_name=input_name, input_dims=pre.input_shape,
            output_name="logits", num_classes=num_classes, max_batch_size=max_batch,
            preferred_batches=tuple(b for b in cfg.batches if b <= max_batch),
        ))
    return models
