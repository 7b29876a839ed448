"""What a runtime can be asked to run: an ONNX file, a TensorRT plan, or a MODEL spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _onnx
from ..engine.record import load_record
from ..errors import UsageError
from ..models import parse_model_spec
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
    record: dict[str, Any] | None = None  # a plan's build record
    _preprocess: Preprocess | None = field(default=None, repr=False, compare=False)

    @classmethod
    def resolve(cls, text: str, **model_options: Any) -> Artifact:
        p = Path(text)
        if p.suffix == ".onnx":
            model = _onnx.load(p)  # clear error when missing, corrupt, or reading outside its folder
            _onnx.check_classifier(model, p)
            batch = _onnx.image_input(model)[1][0]
            return cls(text, "onnx", p, _onnx.metadata(model), _onnx.precision(model), batch)
        if p.suffix in PLAN_SUFFIXES:
            if not p.is_file():
                raise UsageError(f"{p} not found; check the path or build it with `resdeploy build`")
            record = load_record(p)
            meta = (record or {}).get("onnx_metadata", {})
            return cls(text, "plan", p, meta, (record or {}).get("precision", "unknown"), None, record=record)
        parsed = parse_model_spec(text)  # one grammar for every MODEL spec; unknown ones fail here
        return cls(text, "model", parsed.path, {}, "fp32", None, dict(model_options))

    def batch_range(self) -> tuple[int, int | None]:
        """Smallest and largest batch it runs: a static ONNX's own, a plan's optimisation profile
        (from its build record), else (1, None)."""
        if self.batch:
            return self.batch, self.batch
        profile = next(iter(((self.record or {}).get("profile") or {}).values()), None)
        if profile:
            return int(profile["min"][0]), int(profile["max"][0])
        return 1, None

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else self.text

    def preprocess(self) -> Preprocess:
        """The preprocessing the artifact expects: from its metadata, or from the MODEL spec."""
        if self._preprocess is not None:
            return self._preprocess
        if self.kind == "model":
            self._preprocess = self.load_model().preprocess
            return self._preprocess
        pre = Preprocess.from_metadata(self.metadata)
        if pre is None:
            raise UsageError(
                f"{self.text} carries no resdeploy preprocessing metadata; export it with `resdeploy export`, "
                "or evaluate an .npz that is already preprocessed"
            )
        self._preprocess = pre
        return pre

    def load_model(self) -> Any:
        from ..models import ModelSpec, load_model

        if self.kind != "model":
            raise UsageError(f"{self.text} is not a MODEL spec")
        return load_model(ModelSpec(self.text, **self.model_options))

    def reference(self, *, trust_pickle: bool = False) -> Artifact:
        """The FP32 torch model this artifact was exported from (named in its metadata).

        The metadata is read from an untrusted file, so it can name a model but never consent for
        the user: a pickled module still needs ``trust_pickle`` from this command line, and a
        ``package.module:factory`` (importing it runs code) must be passed as ``--reference``.
        """
        if self.kind == "model":
            return self
        source = self.metadata.get("resdeploy.source")
        if not source:
            raise UsageError(f"{self.text} does not name its source model; pass --reference MODEL or FP32.onnx")
        if parse_model_spec(source).kind == "factory":
            raise UsageError(
                f"{self.text} names {source} as its source model; importing it runs code, so say so yourself: "
                f"--reference {source}"
            )
        pre = self.preprocess()
        num_classes = self.metadata.get("resdeploy.num_classes")
        options = {
            "weights": self.metadata.get("resdeploy.weights"),
            "num_classes": int(num_classes) if num_classes else None,
            "input_size": pre.input_size,
            "mean": pre.mean,
            "std": pre.std,
            "trust_pickle": trust_pickle,
        }
        return Artifact.resolve(source, **options)
