"""The error family: every failure the CLI reports is a :class:`ResdeployError`.

``exit_code`` follows the contract: 2 for bad usage or bad input (the user can fix the
command line), 1 for a stage that ran and failed (verification, accuracy budget, build).
Messages name the cause and, after a semicolon, the fix.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = [
    "BackendUnavailableError",
    "BuildError",
    "DataSpecError",
    "ExportError",
    "ModelSpecError",
    "QuantizeError",
    "ResdeployError",
    "StageError",
    "UsageError",
    "VerificationError",
    "environment_error",
    "from_payload",
    "numpy_abi_guard",
    "to_payload",
]


class ResdeployError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    child_traceback: str | None = None  # the traceback of the process the error was raised in, if not this one


class UsageError(ResdeployError):
    """Bad command line or bad input file: the user can fix it."""

    exit_code = 2


class ModelSpecError(UsageError):
    """A MODEL spec (name, weights, file, factory) cannot be resolved."""


class DataSpecError(UsageError):
    """A DATA spec cannot be resolved or its content does not fit the model."""


class BackendUnavailableError(UsageError):
    """A runtime backend was asked for but is not installed or cannot run the artifact."""


class StageError(ResdeployError):
    """A stage ran on valid input and failed."""


class ExportError(StageError):
    """Export to ONNX failed."""


class VerificationError(StageError):
    """A produced artifact disagrees numerically with its reference beyond tolerance."""


class QuantizeError(StageError):
    """Quantization failed or could not meet the accuracy budget."""


class BuildError(StageError):
    """A TensorRT engine build failed."""


# Failures that come from the installed stack, not from resdeploy or its input.
# NumPy 2 prints this, with the stack that was importing, when a module built against NumPy 1.x loads;
# the module then fails with "_ARRAY_API not found", "numpy.core.multiarray failed to import", or (onnxruntime
# before 1.19) an ImportError without a message; torch survives the import and raises "Numpy is not available".
_NUMPY_BANNER = "A module that was compiled using NumPy 1.x cannot be run in"
_NUMPY_ABI = ("compiled using NumPy 1.x", "_ARRAY_API not found", "numpy.core.multiarray failed to import",
              "numpy.core._multiarray_umath failed to import", "Failed to initialize NumPy", "Numpy is not available")
_TORCH_WORDING = ("Numpy is not available", "Failed to initialize NumPy")
_banners: list[str] = []  # NumPy's banners printed since numpy_abi_guard was last entered


class _BannerFilter:
    """``sys.stderr`` inside :func:`numpy_abi_guard`: NumPy's banner (one write of many lines and a stack)
    and what the failing module prints right after it (Python's report of "AttributeError: _ARRAY_API not
    found", in pieces, with a traceback when it was raised while handling another error) are kept for
    :func:`environment_error`, shown only when asked. Everything else passes through."""

    _MAX_HELD = 200  # lines: no line of NumPy's wording after a banner, so it was something else

    def __init__(self, stream: TextIO, show: bool) -> None:
        self._stream = stream
        self._show = show
        self._held: str | None = None  # after a banner: what was written since, until a line in NumPy's wording

    def write(self, text: str) -> int:
        if _NUMPY_BANNER in text:
            _banners.append(text)
            if self._show:
                return self._stream.write(text)
            self.flush()
            self._held = ""
            return len(text)
        if self._held is None:
            return self._stream.write(text)
        self._held += text
        lines = self._held.split("\n")
        for i, line in enumerate(lines[:-1]):  # the complete lines
            if any(s in line for s in _NUMPY_ABI):
                rest, self._held = "\n".join(lines[i + 1:]), None
                if rest:
                    self._stream.write(rest)
                break
        else:
            if len(lines) > self._MAX_HELD:
                self.flush()
        return len(text)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._stream.write(held)
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def numpy_abi_guard(show: bool = False) -> Iterator[None]:
    """Run a command with NumPy's multi-line banner about a module built against NumPy 1.x recorded, not
    printed (``show``: printed too, for ``--debug``), so that the failure it announces can be reported
    as one line by :func:`environment_error`, which names the module from it."""
    _banners.clear()
    stream = sys.stderr
    sys.stderr = _BannerFilter(stream, show)  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            if not show:  # torch's own wording of the same banner, at import
                warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
            yield
    finally:
        if isinstance(sys.stderr, _BannerFilter):
            sys.stderr.flush()
        sys.stderr = stream


def _chain(exc: BaseException) -> list[BaseException]:
    """EXC, then what it was raised from or while handling, without cycles."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not seen for seen in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _module_of(filename: str) -> str | None:
    """The top-level module FILENAME belongs to, found from sys.path ("onnxruntime" for
    .../site-packages/onnxruntime/capi/_pybind_state.py); None for resdeploy, NumPy and the standard library."""
    path = os.path.abspath(filename)
    here = os.path.dirname(os.path.abspath(__file__))
    if path.startswith(here + os.sep):
        return None
    roots = [os.path.abspath(p or os.curdir) for p in sys.path]
    root = max((r for r in roots if path.startswith(r.rstrip(os.sep) + os.sep)), key=len, default=None)
    if root is None:
        return None
    name = os.path.relpath(path, root).split(os.sep)[0]
    name = name[:-3] if name.endswith(".py") else name
    if not name.isidentifier() or name in sys.stdlib_module_names or name in ("numpy", "resdeploy"):
        return None
    return name


def _deepest(filenames: list[str]) -> str | None:
    modules = [m for m in map(_module_of, filenames) if m]
    return modules[-1] if modules else None


def _raised_in(chain: list[BaseException]) -> str | None:
    """The module an exception of CHAIN was raised in (its innermost frame outside resdeploy, NumPy and the
    standard library; for an extension that failed to load, the ``name`` its ImportError carries)."""
    for e in chain:
        module = _deepest([f.filename for f in traceback.extract_tb(e.__traceback__)])
        if module is None and isinstance(e, ImportError) and not isinstance(e, ModuleNotFoundError) and e.name:
            module = e.name.split(".")[0]
        if module:
            return module
    return None


def _banner_modules() -> list[str]:
    """The module each recorded banner was printed while importing."""
    found = (_deepest(re.findall(r'File "([^"]+)", line \d+', b)) for b in _banners)
    return [m for m in found if m]


def _installed(module: str | None) -> tuple[str, str | None]:
    """(distribution, version) providing MODULE: ("onnxruntime-gpu", "1.18.1") for onnxruntime where that is
    installed; ("<package>", None) when the module is not known."""
    from importlib import metadata

    if module is None:
        return "<package>", None
    for dist in metadata.packages_distributions().get(module, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return module, None


def _numpy_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None


def environment_error(exc: BaseException) -> UsageError | None:
    """A one-line cause and fix for a known mismatch of installed packages (a compiled module that cannot
    run with the installed NumPy; an ImportError without a message), else None."""
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    module = _raised_in(chain)
    banners = _banner_modules()
    failed_import = any(isinstance(e, ImportError) and not isinstance(e, ModuleNotFoundError) for e in chain)
    if any(s in text for s in _NUMPY_ABI) or (failed_import and module in banners):
        if any(s in text for s in _TORCH_WORDING):  # torch's words, whoever called it
            module = "torch"
        elif banners and module not in banners:  # the banner's stack names the import that failed
            module = banners[-1]
        return UsageError(_numpy_message(module))
    if any(isinstance(e, ImportError) and not str(e).strip() for e in chain):
        dist, version = _installed(module)
        what, pin = (f"{dist} {version}", f"'{dist}=={version}'") if version else (dist, dist)
        return UsageError(f"{what} fails to import (an ImportError without a message; rerun with --debug for its "
                          f"traceback); pip install --force-reinstall {pin}")
    return None


def _numpy_message(module: str | None) -> str:
    """MODULE cannot run with the installed NumPy, and the one command that fixes it."""
    numpy = _numpy_version() or "?"
    dist, version = _installed(module)
    what = f"{dist} {version}" if version else dist
    major = numpy.split(".")[0]
    if not major.isdigit() or int(major) >= 2:
        # numpy<2 keeps the user's own builds (NVIDIA's Jetson torch); NumPy 1.x has no wheels for Python 3.13+.
        fix = "pip install 'numpy<2'" if sys.version_info < (3, 13) else f"pip install --upgrade {dist}"
        return f"{what} was built against NumPy 1.x and cannot run with the installed NumPy {numpy}; {fix}"
    pin = f"'{dist}=={version}'" if version else dist
    return (f"{what} cannot run with the installed NumPy {numpy} (it was built against another NumPy); "
            f"pip install --force-reinstall {pin}")


def to_payload(exc: BaseException) -> dict[str, str | int]:
    """A JSON-able form, for errors that cross a process boundary (the isolated bench worker),
    with the traceback, so the parent can show it under ``--debug`` (pypa/build keeps it too)."""
    env = None if isinstance(exc, UsageError) else environment_error(exc)
    known = env is not None or isinstance(exc, ResdeployError)
    shown = env if env is not None else exc
    return {"type": type(shown).__name__, "message": str(shown) if known else f"unexpected {type(exc).__name__}: {exc}",
            "exit_code": shown.exit_code if isinstance(shown, ResdeployError) else 1,
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def from_payload(payload: dict[str, str | int]) -> ResdeployError:
    """The same error class again on this side of the boundary (unknown names become StageError),
    carrying the other side's traceback as ``child_traceback``."""
    cls = globals().get(str(payload.get("type", "")))
    if not (isinstance(cls, type) and issubclass(cls, ResdeployError)):
        cls = StageError
    error = cls(str(payload.get("message", "no detail")))
    error.child_traceback = str(payload.get("traceback") or "") or None
    return error
