"""One parser per kind of value, for flags and TOML alike: a list is ``[1, 8]``, ``"1,8"`` or
``"1, 8"``; a number may arrive as a string (from a flag, or a list item of one)."""

from __future__ import annotations

from typing import Any

from .errors import UsageError

__all__ = ["parse_list", "parse_scalar"]


def parse_list(value: Any, item: type, what: str) -> tuple[Any, ...]:
    """``value`` as a tuple of ``item``; ``what`` names the setting in the error."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise UsageError(f"{what} must be a list (or a comma-separated string), got {value!r}")
    try:
        return tuple(parse_scalar(v, item) for v in items)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a list of {item.__name__}, got {value!r}") from None


def parse_scalar(value: Any, kind: type) -> Any:
    """``value`` as ``kind``; TypeError or ValueError when it is not one (a bool is never a number)."""
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if isinstance(value, bool):
        raise TypeError(value)
    if kind in (int, float) and isinstance(value, str):
        return kind(value)
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        raise TypeError(value)
    return value
