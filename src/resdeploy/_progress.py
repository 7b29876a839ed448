"""Progress reporting hook: silent in the library, a tqdm bar once the CLI enables it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_enabled = False


def enable(flag: bool = True) -> None:
    """Called by the CLI only; libraries never draw on the terminal by themselves."""
    global _enabled
    _enabled = flag


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Bars on (or off) for one library call, then as they were: ``resdeploy.evaluate(..., progress=True)``."""
    global _enabled
    before, _enabled = _enabled, flag
    try:
        yield
    finally:
        _enabled = before


def track(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    if not _enabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (CI logs stay readable).
    with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=None) as bar:
        yield from bar


@contextlib.contextmanager
def counter(total: int | None, *, desc: str = "", unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A bar advanced by hand (``advance(n)``): rates in ``unit``/s, e.g. images per second."""
    if not _enabled:
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=None) as bar:
        yield bar.update
