"""What a runtime can be asked to run: an ONNX file, a TensorRT plan, or a MODEL spec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _onnx
from ..engine.record import load_record
from ..errors import UsageError
from ..models import parse_model_spec
from ..preprocess import GivenPreprocess, Preprocess

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
    input_shape: tuple[int, ...] | None = None  # (C, H, W) of an ONNX's or a plan's input
    given: GivenPreprocess = field(default_factory=GivenPreprocess)  # --input-size/--mean/--std
    _preprocess: Preprocess | None = field(default=None, repr=False, compare=False)

    @classmethod
    def resolve(cls, text: str, given: GivenPreprocess | None = None, **model_options: Any) -> Artifact:
        """``given``: how to preprocess for an ONNX (or a plan of one) without resdeploy's
        metadata; for a MODEL spec, its --input-size/--mean/--std where ``model_options`` has none."""
        p = Path(text)
        given = given or GivenPreprocess()
        if p.suffix == ".onnx":
            model = _onnx.load(p)  # clear error when missing, corrupt, or reading outside its folder
            _onnx.check_classifier(model, p)
            batch, *chw = _onnx.image_input(model, p)[1]
            return cls(text, "onnx", p, _onnx.metadata(model), _onnx.precision(model), batch,
                       input_shape=tuple(chw), given=given)
        if p.suffix in PLAN_SUFFIXES:
            if not p.is_file():
                raise UsageError(f"{p} not found; check the path or build it with `resdeploy build`")
            record = load_record(p)
            meta = (record or {}).get("onnx_metadata", {})
            profile = next(iter(((record or {}).get("profile") or {}).values()), None)
            shape = tuple(int(d) for d in profile["opt"][1:]) if profile else None
            return cls(text, "plan", p, meta, (record or {}).get("precision", "unknown"), None, record=record,
                       input_shape=shape, given=given)
        parsed = parse_model_spec(text)  # one grammar for every MODEL spec; unknown ones fail here
        options = dict(model_options)
        for name in ("input_size", "mean", "std"):
            if options.get(name) is None and getattr(given, name) is not None:
                options[name] = getattr(given, name)
        return cls(text, "model", parsed.path, {}, "fp32", None, options)

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
        if pre is not None:
            self.given.check(pre, self.text)
        elif self.given and self.input_shape is not None:
            pre = self.given.for_input(self.input_shape, self.text)
        else:
            raise UsageError(
                f"{self.text} carries no resdeploy preprocessing metadata; say how to preprocess for it with "
                "--mean/--std (and --input-size), export it with `resdeploy export`, or evaluate an .npz that is "
                "already preprocessed"
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
            if self.kind == "onnx" and self.precision == "fp32":
                return self  # an FP32 ONNX from another tool is its own reference
            raise UsageError(f"{self.text} does not name its source model; pass --reference MODEL or FP32.onnx")
        if source.endswith(".onnx"):  # an FP32 ONNX from another tool, taken in by quantize or run
            ref = Artifact.resolve(source)
            ref._preprocess = self.preprocess()
            return ref
        if parse_model_spec(source).kind == "factory":
            raise UsageError(
                f"{self.text} names {source} as its source model; importing it runs code, so say so yourself: "
                f"--reference {source}"
            )
        pre = self.preprocess()
        num_classes = self.metadata.get("resdeploy.num_classes")
        options: dict[str, Any] = {
            "weights": self.metadata.get("resdeploy.weights"),
            "num_classes": int(num_classes) if num_classes else None,
            "input_size": pre.input_size,
            "mean": pre.mean,
            "std": pre.std,
            "trust_pickle": trust_pickle,
        }
        return Artifact.resolve(source, **options)
