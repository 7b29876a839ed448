"""``resdeploy run``: export -> quantize -> build -> eval -> bench -> report, each stage a method
of a small :class:`Runner` that times it and caches it by its inputs' hashes in OUTDIR.

OUTDIR is locked for the run (a second run on it exits 2 naming the holder's pid; a lock left
by a killed run is released by the kernel and taken over), every artifact is written
atomically, and a stage is recorded only once its artifacts are in place: an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .. import __version__, _io
from .._tensorrt import RTX_INSTALL_HINT, import_builder, tensorrt_unavailable_reason
from ..device import BundleSource, environment, write_bundle
from ..engine import FAMILIES, BuildConfig, inspect_onnx, trtexec_script
from ..errors import UsageError
from ..measure import BenchConfig, benchmark_isolated, evaluate
from ..models import ModelSpec, load_model
from ..preprocess import GivenPreprocess
from ..quantize import QuantizeConfig, quantize
from ..runtime import Artifact, get_backend, usable_backends
from ._stages import StageStore
from .config import RunConfig
from .report import make_report, manifest, write_report
from .state import RunState, Variant

log = logging.getLogger(__name__)

__all__ = ["RunResult", "RunState", "Runner", "Variant", "run_pipeline"]

T = TypeVar("T")
LOCK_NAME = ".resdeploy-lock"


@dataclass
class RunResult:
    outdir: Path
    report: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What determines the FP32 model's weights, computable before exporting."""
    from ..zoo import load_zoo_model, zoo_path

    ident: dict[str, Any] = asdict(spec)
    parsed = spec.parsed
    if parsed.kind == "zoo":
        load_zoo_model(parsed.name)  # trains on first use, so the weights exist to be hashed
        ident["weights_sha256"] = _io.sha256_file(zoo_path(parsed.name))
    elif spec.weights and Path(spec.weights).is_file():
        ident["weights_sha256"] = _io.sha256_file(spec.weights)
    elif parsed.path is not None:
        ident["file_sha256"] = _io.sha256_file(parsed.path)
    return ident


def variants_for(cfg: RunConfig, out: Path, slug: str) -> list[Variant]:
    vs = []
    if "fp32" in cfg.precisions:
        vs.append(Variant("fp32", "fp32", "cpu", out / f"{slug}-fp32.onnx"))
    if "fp16" in cfg.precisions:
        vs.append(Variant("fp16", "fp16", "tensorrt", out / f"{slug}-fp16.onnx", QuantizeConfig(precision="fp16")))
    if "int8" in cfg.precisions:
        for target in cfg.targets:
            q = replace(cfg.quantize, precision="int8", target=target)
            vs.append(Variant(f"int8-{target}", "int8", target, out / f"{slug}-int8-{target}.onnx", q))
    return vs


class Runner:
    """One pipeline run in OUTDIR: each public method is a stage."""

    def __init__(self, cfg: RunConfig, out: Path, argv: list[str]) -> None:
        self.cfg, self.out = cfg, out
        self.store = StageStore(out)
        spec = cfg.model
        self.state = RunState(cfg, out, argv, spec, variants_for(cfg, out, spec.parsed.slug))
        self.spec, self.slug = spec, self.state.slug
        self.stages, self.variants, self.engines = self.state.stages, self.state.variants, self.state.engines
        self.ident = model_identity(self.spec)
        self.fp32 = out / f"{self.slug}-fp32.onnx"
        self.hashes: dict[str, str] = {}

    def stage(self, name: str, params: dict[str, Any], produce: Callable[[], T], artifact: Path | None = None) -> T:
        t0 = time.perf_counter()
        result, reused = self.store.run(name, {**params, "resdeploy": __version__}, produce,
                                        [artifact] if artifact is not None else [])
        self.stages.append({"name": name, "seconds": round(time.perf_counter() - t0, 3),
                            "artifact": str(artifact) if artifact else None, "reused": reused})
        log.info("stage %s: %s in %.1f s", name, "reused" if reused else "done", self.stages[-1]["seconds"])
        return result

    @property
    def onnx_source(self) -> bool:
        """The MODEL is an FP32 ONNX from another tool: taken in, not exported; its own reference."""
        return is_onnx_spec(self.spec)

    def export(self) -> dict[str, Any]:
        from ..export import export_onnx

        if self.onnx_source:
            return self.stage("export", {"model": self.ident}, partial(adopt_onnx, self.spec, self.fp32), self.fp32)
        return self.stage("export", {"model": self.ident},
                          lambda: export_onnx(load_model(self.spec), self.fp32).to_dict(), self.fp32)

    def reference(self) -> Artifact:
        """The FP32 reference: the torch model, or the ONNX from another tool as given."""
        spec = self.spec
        return Artifact.resolve(spec.spec, GivenPreprocess(spec.input_size, spec.mean, spec.std), **model_options(spec))

    def quantize(self) -> dict[str, Any]:
        fp32_sha = _io.sha256_file(self.fp32)
        reports = {}
        for v in self.variants:
            if v.quantize is None or v.path is None:
                continue
            path, qcfg = v.path, v.quantize
            reports[v.name] = self.stage(f"quantize:{v.name}", {"fp32": fp32_sha, "config": asdict(qcfg)},
                                         partial(_quantize, self.fp32, path, qcfg), path)
        self.hashes = {str(v.path): _io.sha256_file(v.path) for v in self.variants if v.path is not None}
        return reports

    def build(self) -> None:
        """Engines of the TensorRT-targeted variants: with TensorRT where it and a GPU are here,
        else with TensorRT-RTX (ahead of time, no GPU needed); ``trtexec.sh`` always. The
        cpu-profile INT8 is left out of both (no TensorRT parser reads it)."""
        targeted = [v for v in self.variants if v.for_tensorrt]
        entries = [(inspect_onnx(v.path), f"{v.path.stem}.plan") for v in targeted if v.path is not None]
        _io.write_text(self.out / "trtexec.sh", trtexec_script(entries, self.cfg.build))
        builder, reason = _engine_builder()
        if builder is None:
            self.stages.append({"name": "build", "seconds": 0.0, "artifact": None, "reused": False,
                                "skipped": f"{reason}; see trtexec.sh"})
            log.info("build: skipped (%s); trtexec commands in %s", reason, self.out / "trtexec.sh")
            return
        version = import_builder(FAMILIES[builder].module).__version__
        bcfg = self.cfg.build
        runnable = get_backend(builder).unavailable_reason() is None
        for v in targeted:
            assert v.path is not None
            plan = v.path.with_suffix(".plan" if builder == "tensorrt" else ".engine")
            record = self.stage(f"build:{v.name}", {"onnx": self.hashes[str(v.path)], "config": asdict(bcfg),
                                                    "builder": builder, "version": version},
                                partial(_build, v.path, plan, bcfg, builder), plan)
            self.state.built.append({"variant": v.name, "artifact": str(plan), "builder": builder,
                                     "builder_version": version,
                                     "compute_capabilities": record.get("compute_capabilities_targeted"),
                                     "build_seconds": record.get("build_seconds"), "runnable_here": runnable})
            self.hashes[str(plan)] = _io.sha256_file(plan)
            if runnable:
                self.engines.append(Variant(v.name, v.precision, v.target, plan, backend=builder))

    def bundle(self, report: dict[str, Any]) -> None:
        """OUTDIR/bundle: what `resdeploy verify` checks on the device (reused while the variants
        and the validation data are unchanged), made from this run's report in memory."""
        params = {"artifacts": self.hashes, "val": self.cfg.val, "model": self.ident}
        source = BundleSource.from_report(self.out, report, self.spec, self.cfg.val)
        self.stage("bundle", params, partial(_bundle, source), self.out / "bundle" / "bundle.json")

    def runs(self) -> list[tuple[Variant, str]]:
        """(variant, backend) pairs to measure: each ONNX on each ONNX backend, each plan on tensorrt."""
        return [(v, b) for v in self.variants for b in usable_backends("onnx")] + [(p, p.backend or "tensorrt") for p in self.engines]

    def evaluate(self) -> dict[str, Any]:
        """Every (artifact, backend) on the validation set: OpenVINO's and TensorRT's kernels are
        measured, not assumed to match ONNX Runtime's."""
        items = [(str(v.path), b) for v, b in self.runs()]

        def produce() -> dict[str, Any]:
            reference = self.reference()
            report = evaluate([Artifact.resolve(p) for p, _ in items], self.cfg.val, reference=reference,
                              backend=[b for _, b in items], config=self.cfg.eval)
            return report.to_dict()

        params = {"artifacts": [(p, b, self.hashes[p]) for p, b in items], "val": self.cfg.val,
                  "limit": self.cfg.val_limit, "model": self.ident}
        return self.stage("eval", params, produce)

    def bench(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Each (artifact, backend) in its own process, plus the torch reference."""
        cfg = self.cfg
        bcfg = cfg.bench
        env = environment(None, "one process per artifact")
        common = {"config": asdict(bcfg), "cpu": env["cpu"], "versions": env["versions"]}
        latency: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # The torch reference on every backend that runs it here: the CPU, and the GPU where torch sees one.
        # (An ONNX from another tool has no torch model: its FP32 variant is the reference's speed.)
        references = [] if self.onnx_source else [(Variant("torch", "fp32", "cpu", None), b)
                                                  for b in usable_backends("model")]
        for v, backend in [*references, *self.runs()]:
            text = str(v.path) if v.path else self.spec.spec
            identity = self.hashes[text] if v.path else self.ident
            latency[(text, backend)] = self.stage(
                f"bench:{v.name}:{backend}", {**common, "artifact": identity, "backend": backend},
                partial(_bench, text, backend, bcfg, model_options(self.spec)))
        return latency


def is_onnx_spec(spec: ModelSpec) -> bool:
    return Path(spec.spec).suffix == ".onnx"


def adopt_onnx(spec: ModelSpec, fp32: Path) -> dict[str, Any]:
    """The export stage for an FP32 ONNX from another tool: BatchNormalization folded, batch made
    symbolic, the preprocessing ``spec`` gives (--input-size/--mean/--std) and the class count
    written into its metadata, verified against the file as given."""
    from .. import _onnx
    from ..export import adopt_fp32
    from ..preprocess import Preprocess

    t0 = time.perf_counter()
    model = _onnx.load(spec.spec)
    nodes = len(model.graph.node)
    bn = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    meta = _onnx.metadata(model)
    given = GivenPreprocess(spec.input_size, spec.mean, spec.std)
    pre = Preprocess.from_metadata(meta)
    if pre is not None:
        given.check(pre, spec.spec)
    result = adopt_fp32(model, spec.spec)
    adopted = result.model
    pre = pre or given.for_input(_onnx.image_input(adopted)[1][1:], spec.spec)
    dims = adopted.graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else 0
    if not classes:
        raise UsageError(f"{spec.spec}'s output {adopted.graph.output[0].name!r} has no fixed class count; export it "
                         "with a fixed (N, classes) logits output")
    _onnx.set_metadata(adopted, {**pre.to_metadata(), "resdeploy.num_classes": str(classes),
                                 "resdeploy.precision": "fp32", "resdeploy.source": str(Path(spec.spec).resolve()),
                                 "resdeploy.version": __version__})
    _io.write_bytes(fp32, _onnx.serialize(adopted))
    return {"path": str(fp32), "nodes_exported": nodes, "nodes_final": len(adopted.graph.node), "bn_in_model": bn,
            "bn_folded_torch": 0, "bn_folded_onnx": result.bn_folded, "simplified": False,
            "checks": [c.to_dict() for c in result.checks], "seconds": round(time.perf_counter() - t0, 3),
            "source": "onnx", "batch_made_dynamic": result.batch_made_dynamic}


def _quantize(fp32: Path, path: Path, config: QuantizeConfig) -> dict[str, Any]:
    return quantize(fp32, path, config).to_dict()


def _build(onnx_path: Path, plan: Path, config: BuildConfig, builder: str) -> dict[str, Any]:
    from ..engine import build_engine

    return build_engine(onnx_path, plan, config, runtime=builder).record


def _engine_builder() -> tuple[str | None, str]:
    """(builder family, "") for the build stage, or (None, why neither can build here)."""
    reason = tensorrt_unavailable_reason()
    if reason is None:
        return "tensorrt", ""
    if import_builder(FAMILIES["tensorrt-rtx"].module) is not None:
        return "tensorrt-rtx", ""
    return None, f"TensorRT: {reason.split(' (')[0]}; TensorRT-RTX: {RTX_INSTALL_HINT.split(' (')[0]}"


def _bench(text: str, backend: str, config: BenchConfig, options: dict[str, Any]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in benchmark_isolated(text, backend, config, options)]


def _bundle(source: BundleSource) -> dict[str, Any]:
    path = write_bundle(source)
    return {"path": str(path), "files": sorted(p.name for p in path.iterdir())}


def model_options(spec: ModelSpec) -> dict[str, Any]:
    opts = asdict(spec)
    opts.pop("spec")
    return opts


def _clean_stale_temporaries(out: Path) -> None:
    """Temporary files a killed run left (``.NAME.XXXX.tmp``); safe to remove under the lock."""
    for p in out.rglob(".*.tmp"):
        p.unlink(missing_ok=True)


def run_pipeline(cfg: RunConfig, argv: list[str] | None = None) -> RunResult:
    """The whole pipeline; report.json, report.md and manifest.json are each written once, last."""
    out = _io.check_outdir(cfg.output)
    with _io.FileLock(out / LOCK_NAME, what=f"resdeploy run -o {out}"):
        _clean_stale_temporaries(out)
        runner = Runner(cfg, out, argv or sys.argv)
        export_info = runner.export()
        quant_reports = runner.quantize()
        runner.build()
        accuracy = runner.evaluate()
        latency = runner.bench()
        report = make_report(runner.state, export_info, quant_reports, accuracy, latency)
        runner.bundle(report)
        write_report(out, report)
        _io.write_json(out / "manifest.json", manifest(runner.state, report["env"]))
    return RunResult(out, report, runner.stages)
