"""``resdeploy run`` configuration: a TOML file with the same names as the flags; flags win.

Every value is checked once, at this boundary, against the type :class:`RunConfig` declares
for it (``batches = "1,abc"`` is an error naming ``batches``, never a crash later).
"""

from __future__ import annotations

import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["RunConfig", "load_config"]

PRECISION_NAMES = ("fp32", "fp16", "int8")
# Flag names that differ from the setting they fill (`--batch 1,8` fills `batches`).
FLAG_ALIASES = {"batch": "batches"}
TARGET_NAMES = ("cpu", "tensorrt")


@dataclass(frozen=True)
class RunConfig:
    """The embedded default is the demo: the zoo model on Fashion-MNIST, every variant."""

    model: str = "zoo:fashion-resnet18"
    weights: str | None = None
    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    trust_pickle: bool = False
    calib: str = "fashion-mnist:train"
    calib_size: int = 512
    calib_method: str = "mse"
    val: str = "fashion-mnist:test"
    val_limit: int | None = None
    max_drop: float | None = None
    precisions: tuple[str, ...] = PRECISION_NAMES
    targets: tuple[str, ...] = TARGET_NAMES
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 10
    iters: int = 100
    max_seconds: float = 20.0
    max_batch: int = 32
    output: str = "runs/demo"
    triton_repo: str | None = None

    def __post_init__(self) -> None:
        from ..quantize import CALIB_METHODS

        bad = set(self.precisions) - set(PRECISION_NAMES)
        if bad or not self.precisions:
            raise UsageError(f"precisions must be among {', '.join(PRECISION_NAMES)}; got {list(self.precisions)}")
        bad = set(self.targets) - set(TARGET_NAMES)
        if bad or not self.targets:
            raise UsageError(f"targets must be among {', '.join(TARGET_NAMES)}; got {list(self.targets)}")
        if not self.batches or any(b < 1 for b in self.batches) or max(self.batches) > self.max_batch:
            raise UsageError(f"batches must be positive and at most max_batch {self.max_batch}; got {list(self.batches)}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise UsageError(f"{name} needs 3 values (R,G,B), got {list(value)}")
        if self.calib_method not in CALIB_METHODS:
            raise UsageError(f"calib-method {self.calib_method!r}: use one of {', '.join(CALIB_METHODS)}")
        for name in ("calib_size", "iters", "max_batch", "val_limit", "num_classes", "input_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.warmup < 0 or self.max_seconds <= 0 or (self.max_drop is not None and self.max_drop < 0):
            raise UsageError("warmup and max-drop cannot be negative, and max-seconds must be positive")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RunConfig:
        try:
            return cls(**settings)
        except TypeError as exc:
            raise UsageError(f"bad setting: {exc}") from exc


def _expected(name: str) -> tuple[type, type | None]:
    """(the value's type, the element type for tuples) from RunConfig's annotations."""
    hint = typing.get_type_hints(RunConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) is not tuple else hint
    origin = typing.get_origin(base) or base
    if origin is tuple:
        return tuple, typing.get_args(base)[0]
    return origin, None


def _coerce(key: str, name: str, value: Any, source: Path) -> Any:
    kind, item = _expected(name)
    if kind is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise UsageError(f"{source}: {key} must be a list (or a comma-separated string), got {value!r}")
        try:
            return tuple(_scalar(v, item or str) for v in value)
        except (TypeError, ValueError):
            raise UsageError(f"{source}: {key} must be a list of {getattr(item, '__name__', 'str')}, got {value!r}") from None
    try:
        return _scalar(value, kind)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {key} must be {kind.__name__}, got {value!r}") from None


def _scalar(value: Any, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if isinstance(value, bool):
        raise TypeError(value)
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is int and isinstance(value, str):
        return int(value)  # "1,8" lists arrive as strings
    if kind is float and isinstance(value, str):
        return float(value)
    if not isinstance(value, kind):
        raise TypeError(value)
    return value


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib  # novermin: guarded by the version check above

        return tomllib
    import tomli  # the PEP 621 way on Python 3.10: a conditional dependency in pyproject

    return tomli


def load_config(path: str | Path) -> dict[str, Any]:
    """The TOML file's settings, keys normalised (``calib-size`` = ``calib_size``); unknown keys
    and values of the wrong type are errors naming the key, never silently ignored."""
    toml = _toml()
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config {p} not found; check the path" if not p.exists() else f"config {p} is not a file")
    try:
        data = toml.loads(p.read_text())
    except (toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p} is not valid TOML: {exc}") from exc
    known = {f.name for f in fields(RunConfig)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = FLAG_ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in known:
            raise UsageError(f"{p}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        out[name] = _coerce(key, name, value, p)
    return out
