"""The backend registry: each backend is declared once, with :func:`register_backend`; the
names, the CLI's choices and its help are derived from here (torchvision's ``register_model``,
ModelOpt's ``RuntimeRegistry.register``)."""

from __future__ import annotations

import logging
from typing import TypeVar

from ..errors import BackendUnavailableError, UsageError
from .artifact import Artifact
from .base import Backend, BackendOptions, Session

log = logging.getLogger(__name__)

__all__ = [
    "auto_backend",
    "backend_help",
    "backend_names",
    "check_backend",
    "get_backend",
    "open_session",
    "reference_backend",
    "register_backend",
    "usable_backends",
]

_REGISTRY: dict[str, type[Backend]] = {}
B = TypeVar("B", bound=type[Backend])


def register_backend(cls: B) -> B:
    """Class decorator: declare a backend under its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"backend {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n)))


def backend_help() -> str:
    """One line per backend for ``--help``: what it runs and on what."""
    kinds = {"onnx": ".onnx", "plan": ".plan", "model": "MODEL"}
    return "; ".join(f"{n}: {_REGISTRY[n].summary} ({'/'.join(kinds[k] for k in _REGISTRY[n].kinds)})"
                     for n in backend_names())


def get_backend(name: str) -> Backend:
    cls = _REGISTRY.get(name)
    if cls is None:
        raise UsageError(f"unknown backend {name!r}; choose from auto, {', '.join(backend_names())}")
    return cls()


def usable_backends(kind: str) -> list[str]:
    """The backends that run artifacts of ``kind`` ("onnx", "plan", "model") and can run here, in listed order."""
    return [n for n in backend_names() if kind in _REGISTRY[n].kinds and _REGISTRY[n]().unavailable_reason() is None]


def reference_backend(artifact: Artifact) -> str:
    """Where the FP32 reference runs: a MODEL on torch-cuda where torch sees a CUDA GPU (TF32
    off, so FP32 still means FP32), else on the CPU; an ONNX reference on ONNX Runtime's CPU."""
    if artifact.kind != "model":
        return "ort-cpu"
    return "torch-cuda" if get_backend("torch-cuda").unavailable_reason() is None else "torch"


def auto_backend(artifact: Artifact) -> str:
    """By artifact kind, then by what is installed: plans -> the family that built them
    (tensorrt or tensorrt-rtx, from the record), ONNX -> ort-cuda when onnxruntime-gpu can run
    here else ort-cpu, MODEL specs -> torch."""
    if artifact.kind == "plan":
        from ..engine.record import builder_family

        return builder_family(artifact.record)
    if artifact.kind == "onnx":
        return "ort-cuda" if get_backend("ort-cuda").unavailable_reason() is None else "ort-cpu"
    return "torch"


def check_backend(artifact: Artifact, backend: str = "auto") -> tuple[str, Backend]:
    """Resolve ``auto`` and check, before any work, that the backend can run ``artifact`` here."""
    name = auto_backend(artifact) if backend == "auto" else backend
    impl = get_backend(name)
    if artifact.kind not in impl.kinds:
        wanted = {"onnx": "an .onnx file", "plan": "a TensorRT .plan or TensorRT-RTX engine", "model": "a MODEL spec"}
        raise UsageError(
            f"backend {name} runs {' or '.join(wanted[k] for k in impl.kinds)}, not {artifact.text}; "
            "use --backend auto"
        )
    reason = impl.unavailable_reason()
    if reason:
        raise BackendUnavailableError(f"backend {name} is unavailable here: {reason}")
    return name, impl


def open_session(artifact: Artifact, backend: str = "auto", options: BackendOptions = BackendOptions()) -> Session:
    """Check that ``backend`` can run ``artifact`` here, then prepare it."""
    name, impl = check_backend(artifact, backend)
    log.debug("opening %s on %s", artifact.text, name)
    return impl.prepare(artifact, options)
