"""The error family: every failure the CLI reports is a :class:`ResdeployError`.

``exit_code`` follows the contract: 2 for bad usage or bad input (the user can fix the
command line), 1 for a stage that ran and failed (verification, accuracy budget, build).
Messages name the cause and, after a semicolon, the fix.
"""

from __future__ import annotations

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
    "from_payload",
    "to_payload",
]


class ResdeployError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


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


def to_payload(exc: ResdeployError) -> dict[str, str | int]:
    """A JSON-able form, for errors that cross a process boundary (the isolated bench worker)."""
    return {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}


def from_payload(payload: dict[str, str | int], context: str = "") -> ResdeployError:
    """The same error class again on this side of the boundary (unknown names become StageError)."""
    cls = globals().get(str(payload.get("type", "")))
    if not (isinstance(cls, type) and issubclass(cls, ResdeployError)):
        cls = StageError
    message = str(payload.get("message", "no detail"))
    return cls(f"{context}{message}" if context else message)
