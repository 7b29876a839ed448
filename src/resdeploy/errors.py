"""The error family: every failure the CLI reports is a :class:`ResdeployError`.

``exit_code`` follows the contract: 2 for bad usage or bad input (the user can fix the
command line), 1 for a stage that ran and failed (verification, accuracy budget, build).
Messages name the cause and, after a semicolon, the fix.
"""

from __future__ import annotations

import traceback

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


# Failures that come from the installed stack, not from resdeploy or its input: text they carry -> fix.
_NUMPY_ABI = ("compiled using NumPy 1.x", "Numpy is not available", "_ARRAY_API not found")


def environment_error(exc: BaseException) -> UsageError | None:
    """A one-line cause and fix for a known mismatch of installed packages, else None."""
    text = f"{exc} {exc.__cause__ or ''}"
    if any(s in text for s in _NUMPY_ABI):
        import numpy

        return UsageError(f"a compiled package (often NVIDIA's Jetson torch or torchvision wheel) was built against "
                          f"NumPy 1.x but NumPy {numpy.__version__} is installed; pip install 'numpy<2'")
    return None


def to_payload(exc: BaseException) -> dict[str, str | int]:
    """A JSON-able form, for errors that cross a process boundary (the isolated bench worker),
    with the traceback, so the parent can show it under ``--debug`` (pypa/build keeps it too)."""
    known = isinstance(exc, ResdeployError)
    return {"type": type(exc).__name__, "message": str(exc) if known else f"unexpected {type(exc).__name__}: {exc}",
            "exit_code": exc.exit_code if isinstance(exc, ResdeployError) else 1,
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
