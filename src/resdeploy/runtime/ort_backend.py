"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (TensorRT execution provider)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _onnx
from ..errors import BackendUnavailableError, environment_error
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec
from .registry import register_backend

# ONNX Runtime's type strings -> NumPy dtypes, for the feed check.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int32)": "int32", "tensor(int64)": "int64"}


def input_specs(sess: Any) -> list[TensorSpec]:
    """What an ONNX Runtime session declares: names, dtypes, shapes (symbolic dims as None)."""
    return [
        TensorSpec(i.name, _ORT_DTYPES.get(i.type, "float32"),
                   tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape))
        for i in sess.get_inputs()
    ]


@dataclass
class OrtSession(Session):
    sess: Any = None

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.sess.run(self.output_names, dict(feed))
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self.sess = None  # drops the session and its thread pool


class OrtBackend(Backend):
    kinds = ("onnx",)
    provider = "CPUExecutionProvider"

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            known = environment_error(exc)  # installed, but built against NumPy 1.x, say
            if known is not None:
                return str(known)
            if isinstance(exc, ModuleNotFoundError) and exc.name == "onnxruntime":
                return "onnxruntime is not installed; pip install onnxruntime (or resdeploy[gpu])"
            return f"onnxruntime fails to import ({exc}); pip install --force-reinstall onnxruntime"
        if self.provider not in ort.get_available_providers():
            return (
                f"this onnxruntime has no {self.provider}; pip uninstall onnxruntime && "
                "pip install 'resdeploy[gpu]' on a machine with an NVIDIA GPU"
            )
        return None

    def providers(self, options: BackendOptions, artifact: Artifact) -> list[Any]:
        return [self.provider]

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"backend {self.name} is unavailable: {reason}")
        assert artifact.path is not None
        sess = _onnx.session(artifact.path, threads=options.threads, providers=self.providers(options, artifact))
        if self.provider not in sess.get_providers():
            # ONNX Runtime falls back to the next provider when one fails to load, and only prints why.
            raise BackendUnavailableError(
                f"backend {self.name}: ONNX Runtime could not start its {self.provider} and fell back to "
                f"{', '.join(sess.get_providers())}; install the CUDA {'and TensorRT ' if 'Tensorrt' in self.provider else ''}"
                "libraries this onnxruntime-gpu was built for (its log above names the missing one), or use ort-cpu")
        return OrtSession(
            backend=self.name,
            artifact=artifact,
            inputs=input_specs(sess),
            output_names=[o.name for o in sess.get_outputs()],
            device=self.device,
            sess=sess,
        )


@register_backend
class OrtCpuBackend(OrtBackend):
    name = "ort-cpu"
    order = 20
    summary = "ONNX Runtime on the CPU"


@register_backend
class OrtCudaBackend(OrtBackend):
    name = "ort-cuda"
    order = 21
    summary = "ONNX Runtime's CUDA provider (onnxruntime-gpu)"
    provider = "CUDAExecutionProvider"
    device = "cuda"

    def providers(self, options: BackendOptions, artifact: Artifact) -> list[Any]:
        return [(self.provider, {"device_id": options.device}), "CPUExecutionProvider"]


@register_backend
class OrtTrtBackend(OrtBackend):
    """TensorRT through ONNX Runtime: engines and timing caches kept in ``cache_dir``."""

    name = "ort-trt"
    order = 22
    summary = "ONNX Runtime's TensorRT provider"
    provider = "TensorrtExecutionProvider"
    device = "cuda"

    def providers(self, options: BackendOptions, artifact: Artifact) -> list[Any]:
        cache = str(options.cache_dir or ".ort_trt_cache")
        trt_opts = {
            "device_id": options.device,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
            # FP32 artifacts stay FP32 (the reference); reduced precision only where the graph asks.
            "trt_fp16_enable": artifact.precision in ("fp16", "int8"),
            "trt_int8_enable": artifact.precision == "int8",  # Q/DQ scales, no calibration table
        }
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", {"device_id": options.device}), "CPUExecutionProvider"]
