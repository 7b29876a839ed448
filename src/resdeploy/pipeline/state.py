"""What one ``resdeploy run`` has made so far: the variants, the engines built from them, the
stage records. The runner fills it; the report, the manifest, the Triton repository and the
bundle take it as an argument (none of them reaches back into the runner)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import ModelSpec
from ..quantize import QuantizeConfig
from .config import RunConfig

__all__ = ["RunState", "Variant"]


@dataclass
class Variant:
    name: str
    precision: str
    target: str
    path: Path | None  # None: the torch model itself
    quantize: QuantizeConfig | None = None
    backend: str | None = None  # an engine's: tensorrt or tensorrt-rtx

    @property
    def for_tensorrt(self) -> bool:
        """Only TensorRT-targeted variants reach a TensorRT parser (FP32, FP16, INT8 --target tensorrt)."""
        return self.path is not None and (self.precision != "int8" or self.target == "tensorrt")


@dataclass
class RunState:
    config: RunConfig
    out: Path
    argv: list[str]
    spec: ModelSpec
    variants: list[Variant]
    engines: list[Variant] = field(default_factory=list)  # engines built from the variants that run here
    built: list[dict[str, Any]] = field(default_factory=list)  # every engine built, with the builder that accepted it
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.spec.parsed.slug

    @property
    def artifacts(self) -> list[Variant]:
        """Every variant and engine, in the order they were made."""
        return [*self.variants, *self.engines]
