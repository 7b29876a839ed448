"""What a runtime can be asked to run: an ONNX file, a TensorRT plan, or a MODEL spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _onnx
from ..build.record import load_record
from ..errors import UsageError
from ..preprocess import Preprocess

__all__ = ["PLAN_SUFFIXES", "Artifact"]

PLAN_SUFFIXES = (".plan", ".engine", ".trt")


@dataclass
class Artifact:
    """A resolved ARTIFACT argument; ``kind`` is ``onnx``, ``plan`` or ``model``."""

    text: str
    kind: str
    path: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    batch: int | None = None  # static batch size, None when dynamic
    model_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, text: str, **model_options: Any) -> Artifact:
        p = Path(text)
        if p.suffix == ".onnx":
            model = _onnx.load(p)  # clear error when missing or corrupt
            batch = _onnx.image_input(model)[1][0]
            return cls(text, "onnx", p, _onnx.metadata(model), _onnx.precision(model), batch)
        if p.suffix in PLAN_SUFFIXES:
            if not p.is_file():
                raise UsageError(f"{p} not found; check the path or build it with `resdeploy build`")
            record = load_record(p) or {}
            meta = record.get("onnx_metadata", {})
            return cls(text, "plan", p, meta, record.get("precision", "unknown"), None)
        if p.suffix in (".pth", ".pt", ".ts", ".jit") and not p.exists():
            raise UsageError(f"{p} not found; check the path")
        return cls(text, "model", p if p.is_file() else None, {}, "fp32", None, dict(model_options))

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else self.text

    def preprocess(self) -> Preprocess:
        """The preprocessing the artifact expects: from its metadata, or from the MODEL spec."""
        if self.kind == "model":
            return self.load_model().preprocess
        pre = Preprocess.from_metadata(self.metadata)
        if pre is None:
            raise UsageError(
                f"{self.text} carries no resdeploy preprocessing metadata; export it with `resdeploy export`, "
                "or evaluate an .npz that is already preprocessed"
            )
        return pre

    def load_model(self) -> Any:
        from ..models import ModelSpec, load_model

        if self.kind != "model":
            raise UsageError(f"{self.text} is not a MODEL spec")
        return load_model(ModelSpec(self.text, **self.model_options))

    def reference(self) -> Artifact:
        """The FP32 torch model this artifact was exported from (named in its metadata)."""
        if self.kind == "model":
            return self
        source = self.metadata.get("resdeploy.source")
        if not source:
            raise UsageError(f"{self.text} does not name its source model; pass --reference MODEL or FP32.onnx")
        pre = self.preprocess()
        num_classes = self.metadata.get("resdeploy.num_classes")
        return Artifact(source, "model", model_options={
            "weights": self.metadata.get("resdeploy.weights"),
            "num_classes": int(num_classes) if num_classes else None,
            "input_size": pre.input_size,
            "mean": pre.mean,
            "std": pre.std,
        })
