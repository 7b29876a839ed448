"""ONNX Runtime backends: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (TensorRT execution provider)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _onnx
from ..errors import BackendUnavailableError
from .artifact import Artifact
from .base import Backend, BackendOptions, Session


@dataclass
class OrtSession(Session):
    sess: Any = None

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        except ImportError:
            return "onnxruntime is not installed; pip install onnxruntime (or resdeploy[gpu])"
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
        return OrtSession(
            backend=self.name,
            artifact=artifact,
            input_name=sess.get_inputs()[0].name,
            output_names=[o.name for o in sess.get_outputs()],
            device=self.device,
            sess=sess,
        )


class OrtCpuBackend(OrtBackend):
    name = "ort-cpu"


class OrtCudaBackend(OrtBackend):
    name = "ort-cuda"
    provider = "CUDAExecutionProvider"
    device = "cuda"

    def providers(self, options: BackendOptions, artifact: Artifact) -> list[Any]:
        return [(self.provider, {"device_id": options.device}), "CPUExecutionProvider"]


class OrtTrtBackend(OrtBackend):
    """TensorRT through ONNX Runtime: engines and timing caches kept in ``cache_dir``."""

    name = "ort-trt"
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
