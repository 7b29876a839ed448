"""OUTDIR/plots/*.png, each written atomically: latency per batch size, accuracy (with its 95%
intervals) against latency, and per-layer SQNR along depth for every INT8 variant.

Axes never use scientific notation for milliseconds, and labels are placed apart (one legend
entry per point instead of text next to points that share a latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import _io

__all__ = ["write_plots"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_ms_axis(axis: Any) -> None:
    """Log-scaled, labelled in plain milliseconds (0.5, 1, 2, 5 ...), never 10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig: Any, path: Path) -> Path:
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _latency(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for v in report["variants"]:
        bs = [b["batch"] for b in v["by_batch"]]
        ax.plot(bs, [b["p50"] for b in v["by_batch"]], marker="o", label=f"{v['name']} ({v['backend']})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms, log scale)")
    ax.set_title(f"{report['model']['spec']}: latency per batch size")
    fig.set_size_inches(10, 5)
    ax.set_xticks(sorted({b["batch"] for v in report["variants"] for b in v["by_batch"]}))
    ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    _plain_ms_axis(ax.yaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _accuracy(report: dict[str, Any], path: Path) -> Path:
    """top-1 with its Wilson interval against p50 latency; each point its own marker and legend
    entry, so variants at the same latency (fp16 and fp32 on a CPU) never print on each other."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    markers = "osD^v<>pP*Xh"
    for i, v in enumerate(x for x in report["variants"] if x["accuracy"].get("top1") is not None):
        top1 = 100 * v["accuracy"]["top1"]
        lo, hi = (100 * c for c in v["accuracy"].get("top1_ci95", (v["accuracy"]["top1"],) * 2))
        ax.errorbar(v["latency_ms"]["p50"], top1, yerr=[[top1 - lo], [hi - top1]], fmt=markers[i % len(markers)],
                    markersize=7, capsize=4, label=f"{v['name']} ({v['backend']}): {top1:.2f} %")
    ax.set_xscale("log")
    _plain_ms_axis(ax.xaxis)
    batch = report["variants"][0]["latency_ms"]["batch"]
    ax.set_xlabel(f"p50 latency at batch {batch} (ms, log scale)")
    ax.set_ylabel(f"top-1 % on {report['data']['val']} (bars: 95% Wilson interval)")
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set_title("accuracy against latency (up and left is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _layer_sqnr(report: dict[str, Any], path: Path) -> Path | None:
    """SQNR of every quantized layer against FP32, in network order, one line per INT8 variant."""
    series = {name: q["layers"] for name, q in report["quantize"].items() if q.get("layers")}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    for name, layers in series.items():
        ax.plot(range(len(layers)), [x["sqnr_db"] for x in layers], marker=".", label=name)
        worst = min(range(len(layers)), key=lambda i: layers[i]["sqnr_db"])
        ax.annotate(layers[worst]["module"], (worst, layers[worst]["sqnr_db"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=7)
    ax.set_xlabel("quantized layer, in network order (Conv and residual Add)")
    ax.set_ylabel("SQNR against FP32 (dB, higher is better)")
    ax.set_title(f"{report['model']['spec']}: per-layer INT8 drift")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_plots(out: Path, report: dict[str, Any]) -> list[Path]:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    paths = [_latency(report, plots / "latency_by_batch.png"), _accuracy(report, plots / "accuracy_vs_latency.png")]
    sqnr = _layer_sqnr(report, plots / "layer_sqnr.png")
    return paths + ([sqnr] if sqnr else [])
