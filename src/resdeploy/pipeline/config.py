"""``resdeploy run`` configuration: a TOML file with the same names as the flags; flags win."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["RunConfig", "load_config"]


@dataclass(frozen=True)
class RunConfig:
    """The embedded default is the demo: the zoo model on Fashion-MNIST, every variant."""

    model: str = "zoo:fashion-resnet18"
    weights: str | None = None
    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    calib: str = "fashion-mnist:train"
    calib_size: int = 512
    calib_method: str = "percentile"
    val: str = "fashion-mnist:test"
    val_limit: int | None = None
    max_drop: float | None = None
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    targets: tuple[str, ...] = ("cpu", "tensorrt")
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 10
    iters: int = 100
    max_seconds: float = 20.0
    max_batch: int = 32
    output: str = "runs/demo"
    triton_repo: str | None = None

    def __post_init__(self) -> None:
        bad = set(self.precisions) - {"fp32", "fp16", "int8"}
        if bad or not self.precisions:
            raise UsageError(f"precisions must be among fp32, fp16, int8; got {list(self.precisions)}")
        bad = set(self.targets) - {"cpu", "tensorrt"}
        if bad or not self.targets:
            raise UsageError(f"targets must be among cpu, tensorrt; got {list(self.targets)}")
        if not self.batches or any(b < 1 for b in self.batches) or max(self.batches) > self.max_batch:
            raise UsageError(f"batches must be positive and at most max_batch {self.max_batch}; got {list(self.batches)}")

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


_TUPLES = {"precisions", "targets", "batches", "mean", "std"}
_INTS = {"num_classes", "input_size", "calib_size", "val_limit", "warmup", "iters", "max_batch"}
_FLOATS = {"max_drop", "max_seconds"}


def load_config(path: str | Path) -> dict[str, Any]:
    """The TOML file's settings, keys normalised (``calib-size`` = ``calib_size``); unknown keys
    are an error, never silently ignored."""
    if sys.version_info < (3, 11):
        raise UsageError("reading CONFIG.toml needs Python 3.11+ (tomllib); pass flags instead")
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config {p} not found; check the path")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p} is not valid TOML: {exc}") from None
    known = {f.name for f in fields(RunConfig)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UsageError(f"{p}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        if name in _TUPLES and isinstance(value, list):
            value = tuple(value)
        elif name in _TUPLES and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(","))
            if name == "batches":
                value = tuple(int(v) for v in value)
        expected = int if name in _INTS else float if name in _FLOATS else tuple if name in _TUPLES else str
        ok = isinstance(value, expected) and not isinstance(value, bool)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise UsageError(f"{p}: {key} must be {expected.__name__ if expected is not tuple else 'a list'}, got {value!r}")
        out[name] = value
    return out
