"""What the library's functions return: the stages' own typed results, each able to say itself as
the JSON the CLI writes (``to_dict()``, ``to_json()``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .. import _io
from ..device.verify import VerifyReport as _VerifyReport
from ..engine.builder import BuildResult as _BuildResult
from ..export.onnx_export import ExportResult as _ExportResult
from ..export.onnx_export import FoldResult as _FoldResult
from ..measure.bench import BenchResult
from ..measure.evaluate import EvalReport as _EvalReport
from ..pipeline.run import RunResult as _RunResult
from ..quantize import QuantizeReport as _QuantizeReport

__all__ = ["BenchReport", "BuildResult", "BundleResult", "EngineCommand", "EvalReport", "ExportResult", "FoldResult",
           "QuantizeResult", "RunResult", "VerifyReport"]

R = TypeVar("R")


def _plain(obj: Any) -> Any:
    """JSON-able: paths as text, tuples as lists, arrays as lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


class Json:
    """``to_dict()`` (the stage's own where it has one) and ``to_json()``."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))  # type: ignore[call-overload]

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        """The JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(_plain(self.to_dict()), indent=indent)
        if path is not None:
            _io.write_text(path, text + "\n")
        return text


def cast(cls: type[R], obj: Any) -> R:
    """``obj`` as an instance of ``cls``, a subclass of its class that adds no fields."""
    new = cls.__new__(cls)
    new.__dict__.update(obj.__dict__)
    return new


class ExportResult(_ExportResult, Json):
    """``export_model``: the ONNX written, its node counts, the BatchNorms folded, and the checks
    against torch on seeded inputs (``checks``; raising VerificationError beyond tolerance)."""

    model: str = ""  # what was exported, e.g. "resnet18 (IMAGENET1K_V1)"

    def to_dict(self) -> dict[str, Any]:
        return {**_ExportResult.to_dict(self), "model": self.model,
                "input_shape": json.loads(self.metadata.get("resdeploy.input_size", "null")),
                "num_classes": int(self.metadata.get("resdeploy.num_classes", "0"))}


class FoldResult(_FoldResult, Json):
    """``fold_bn``: BatchNormalization nodes folded into their Conv, those left, and the checks."""

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "folded": self.folded, "remaining": self.remaining,
                "training_mode_reset": self.training_mode_reset, "checks": [c.to_dict() for c in self.checks]}


class QuantizeResult(_QuantizeReport, Json):
    """``quantize_model``: what ``OUT.quant.json`` holds (calibration, fallback, budget, per-layer SQNR)."""


class BuildResult(_BuildResult, Json):
    """``build_engine``: the engine written and its build record (``to_dict()`` is ``OUT.plan.json``)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)


class EvalReport(_EvalReport, Json):
    """``evaluate``: per artifact top-1/top-5 with their 95% interval, agreement with the FP32
    reference and the drop's McNemar p-value; the reference's own accuracy (``eval --json``)."""


class VerifyReport(_VerifyReport, Json):
    """``verify_bundle``: per (artifact, backend) agreement with the bundle's expected outputs and
    ``passed``; the first divergent layer of one that failed (``verify --json``)."""


class RunResult(_RunResult, Json):
    """``run_pipeline``: OUTDIR, the report (``to_dict()`` is ``report.json``), the stages and the
    settings the run used (``config``, a :class:`~resdeploy.pipeline.RunConfig`)."""

    config: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.report)


@dataclass
class BenchReport(Json):
    """``bench``: one result per (artifact, backend, batch), the machine, the settings (``bench --json``)."""

    results: list[BenchResult]
    env: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "env": self.env, "config": self.config}


@dataclass
class BundleResult(Json):
    """``make_bundle``: the bundle folder and its ``bundle.json`` (``to_dict()``)."""

    path: Path
    manifest: dict[str, Any]
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.manifest)


@dataclass
class EngineCommand(Json):
    """``engine_command``: the trtexec (or tensorrt_rtx) command line that builds the engine elsewhere."""

    builder: str  # tensorrt | tensorrt-rtx
    label: str  # "TensorRT", "TensorRT-RTX"
    version: str
    version_source: str  # given | installed | default, none installed
    precision: str
    recipe: str  # e.g. "TensorRT 10"
    notes: list[str]
    argv: list[str]
    text: str
