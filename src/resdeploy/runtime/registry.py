"""Backend names, ``auto`` selection, and opening a session for an ARTIFACT."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

from ..errors import BackendUnavailableError, UsageError
from .artifact import Artifact
from .base import Backend, BackendOptions, Session

log = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "torch-cuda", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt")


def _factories() -> dict[str, Callable[[], Backend]]:
    from .ort_backend import OrtCpuBackend, OrtCudaBackend, OrtTrtBackend
    from .tensorrt_backend import TensorRTBackend
    from .torch_backend import TorchBackend

    return {
        "torch": lambda: TorchBackend("cpu"),
        "torch-cuda": lambda: TorchBackend("cuda"),
        "ort-cpu": OrtCpuBackend,
        "ort-cuda": OrtCudaBackend,
        "ort-trt": OrtTrtBackend,
        "tensorrt": TensorRTBackend,
    }


def get_backend(name: str) -> Backend:
    factories = _factories()
    if name not in factories:
        raise UsageError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKEND_NAMES)}")
    return factories[name]()


def _cuda_onnxruntime() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def auto_backend(artifact: Artifact) -> str:
    """By artifact kind, then by what is installed: plans -> tensorrt, ONNX -> ort-cuda when
    onnxruntime-gpu is present else ort-cpu, MODEL specs -> torch."""
    if artifact.kind == "plan":
        return "tensorrt"
    if artifact.kind == "onnx":
        return "ort-cuda" if _cuda_onnxruntime() else "ort-cpu"
    return "torch"


def check_backend(artifact: Artifact, backend: str = "auto") -> tuple[str, Backend]:
    """Resolve ``auto`` and check, before any work, that the backend can run ``artifact`` here."""
    name = auto_backend(artifact) if backend == "auto" else backend
    impl = get_backend(name)
    if artifact.kind not in impl.kinds:
        wanted = {"onnx": "an .onnx file", "plan": "a TensorRT .plan", "model": "a MODEL spec"}
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
