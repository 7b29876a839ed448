"""``resdeploy run`` configuration, built once, here, from flags and a TOML file (flags win).

:class:`RunConfig` composes the stages' own configs (:class:`~resdeploy.models.ModelSpec`,
:class:`~resdeploy.quantize.QuantizeConfig`, :class:`~resdeploy.engine.BuildConfig`,
:class:`~resdeploy.measure.BenchConfig`, :class:`~resdeploy.measure.EvalConfig`). Each setting has
one flat name, the flag's and the TOML key's (``calib-size``, ``batches``), which says the stage
config field it fills; its type and its default are those the stage config declares. One parser
per kind of value serves flags and TOML alike: a list is ``[1, 8]`` or ``"1, 8"`` either way, and
``batches = "1,abc"`` is an error naming ``batches``, never a crash later.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._parse import parse_list, parse_scalar
from ..engine import BuildConfig
from ..errors import UsageError
from ..measure import BenchConfig, EvalConfig
from ..models import ModelSpec
from ..preprocess import parse_size
from ..quantize import QuantizeConfig

__all__ = ["SETTINGS", "RunConfig", "load_config", "parse_list", "run_config"]

PRECISION_NAMES = ("fp32", "fp16", "int8")
TARGET_NAMES = ("cpu", "tensorrt")
# Flag names that differ from the setting they fill (`--batch 1,8` fills `batches`).
FLAG_ALIASES = {"batch": "batches"}
# Each setting's flat name -> (the RunConfig field holding the stage config, that config's field).
SETTINGS: dict[str, tuple[str, str]] = {
    "model": ("model", "spec"),
    **{n: ("model", n) for n in ("weights", "num_classes", "input_size", "mean", "std", "trust_pickle")},
    **{n: ("quantize", n) for n in ("calib", "calib_size", "calib_method")},
    "val": ("run", "val"),
    "val_limit": ("eval", "limit"),
    "max_drop": ("quantize", "max_drop"),
    **{n: ("run", n) for n in ("precisions", "targets")},
    **{n: ("bench", n) for n in ("batches", "warmup", "iters", "max_seconds")},
    "max_batch": ("build", "max_batch"),
    **{n: ("run", n) for n in ("output", "triton_repo")},
}
# The run's own defaults, where they are not the stage config's: the embedded demo.
RUN_DEFAULTS: dict[str, Any] = {"model": "zoo:fashion-resnet18", "calib": "fashion-mnist:train",
                                "val": "fashion-mnist:test", "precisions": PRECISION_NAMES,
                                "targets": TARGET_NAMES, "output": "runs/demo", "triton_repo": None}
_STAGE_TYPES: dict[str, type] = {"model": ModelSpec, "quantize": QuantizeConfig, "build": BuildConfig,
                                 "bench": BenchConfig, "eval": EvalConfig}


@dataclass(frozen=True, init=False)
class RunConfig:
    """The embedded default is the demo: the zoo model on Fashion-MNIST, every variant.

    Built from flat settings (``RunConfig(calib_size=256)``); each is also readable by its flat
    name (``cfg.calib_size`` is ``cfg.quantize.calib_size``)."""

    model: ModelSpec
    quantize: QuantizeConfig  # the INT8 calibration settings; each variant sets its precision and target
    build: BuildConfig
    bench: BenchConfig
    eval: EvalConfig
    val: str
    precisions: tuple[str, ...]
    targets: tuple[str, ...]
    output: str
    triton_repo: str | None

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise UsageError(f"bad setting: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(SETTINGS))}")
        s = {**{n: default(n) for n in SETTINGS}, **settings}
        _check(s)
        parts: dict[str, dict[str, Any]] = {part: {} for part in (*_STAGE_TYPES, "run")}
        for name, value in s.items():
            part, field = SETTINGS[name]
            parts[part][field] = value
        parts["build"].update(min_batch=1, opt_batch=max(s["batches"]))
        parts["quantize"].update(val=s["val"], val_limit=s["val_limit"])
        for part, cls in _STAGE_TYPES.items():
            object.__setattr__(self, part, cls(**parts[part]))
        for field, value in parts["run"].items():
            object.__setattr__(self, field, value)

    def __getattr__(self, name: str) -> Any:
        if name not in SETTINGS or SETTINGS[name][0] == "run":
            raise AttributeError(name)
        return self.setting(name)

    def setting(self, name: str) -> Any:
        """A setting by its flat name (``model`` is the MODEL spec text, ``cfg.model`` its ModelSpec)."""
        part, field = SETTINGS[name]
        return getattr(self if part == "run" else object.__getattribute__(self, part), field)

    def settings(self) -> dict[str, Any]:
        """Every setting by its flat name, lists as lists: what the manifest records."""
        return {n: list(v) if isinstance(v, tuple) else v for n in SETTINGS for v in [self.setting(n)]}


def default(name: str) -> Any:
    """A setting's default: the run's own (the demo), else the one its stage config declares."""
    if name in RUN_DEFAULTS:
        return RUN_DEFAULTS[name]
    part, field = SETTINGS[name]
    found = next(f for f in dataclasses.fields(_STAGE_TYPES[part]) if f.name == field)
    return found.default


def _check(s: dict[str, Any]) -> None:
    """What no single stage config can check: the run's variant names and the settings between stages."""
    for name, known in (("precisions", PRECISION_NAMES), ("targets", TARGET_NAMES)):
        if set(s[name]) - set(known) or not s[name]:
            raise UsageError(f"{name} must be among {', '.join(known)}; got {list(s[name])}")
    if not s["batches"] or any(b < 1 for b in s["batches"]) or max(s["batches"]) > s["max_batch"]:
        raise UsageError(f"batches must be positive and at most max_batch {s['max_batch']}; got {list(s['batches'])}")
    for name in ("mean", "std"):  # one value per channel (or one for all): the model's channel count decides
        if s[name] is not None and not s[name]:
            raise UsageError(f"{name} needs one value per channel (or one for all), got {list(s[name])}")
    for name in ("calib_size", "iters", "max_batch", "val_limit", "num_classes"):
        if s[name] is not None and s[name] < 1:
            raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {s[name]}")
    if s["warmup"] < 0 or s["max_seconds"] <= 0 or (s["max_drop"] is not None and s["max_drop"] < 0):
        raise UsageError("warmup and max-drop cannot be negative, and max-seconds must be positive")


def _expected(name: str) -> tuple[type, type | None]:
    """(the value's type, the element type for lists) from the annotation of the field it fills."""
    part, field = SETTINGS[name]
    hint = typing.get_type_hints(RunConfig if part == "run" else _STAGE_TYPES[part])[field]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) is not tuple else hint
    origin = typing.get_origin(base) or base
    if origin is tuple:
        return tuple, typing.get_args(base)[0]
    return origin, None


def _coerce(key: str, name: str, value: Any, source: str) -> Any:
    if name == "input_size":  # S, "H,W" or [H, W]
        return parse_size(value, f"{source}{key}")
    kind, item = _expected(name)
    if kind is tuple:
        return parse_list(value, item or str, f"{source}{key}")
    try:
        return parse_scalar(value, kind)
    except (TypeError, ValueError):
        raise UsageError(f"{source}{key} must be {kind.__name__}, got {value!r}") from None


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib  # novermin: guarded by the version check above

        return tomllib
    import tomli  # the PEP 621 way on Python 3.10: a conditional dependency in pyproject

    return tomli


def _setting(key: str, source: str) -> str:
    name = FLAG_ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
    if name not in SETTINGS:
        raise UsageError(f"{source}unknown setting {key!r}; known: {', '.join(sorted(SETTINGS))}")
    return name


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
    return {_setting(key, f"{p}: "): _coerce(key, _setting(key, f"{p}: "), value, f"{p}: ") for key, value in data.items()}


def run_config(path: str | Path | None, flags: dict[str, Any]) -> RunConfig:
    """The run's config: the TOML file's settings, then the flags given (None: not given), each
    through the same parser."""
    settings = load_config(path) if path else {}
    for key, value in flags.items():
        if value is None:
            continue
        name = _setting(key, "")
        settings[name] = _coerce(f"--{key.replace('_', '-')}", name, value, "")
    return RunConfig(**settings)
