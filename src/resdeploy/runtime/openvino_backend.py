"""``ov-cpu``: any resdeploy ONNX (FP32, FP16, INT8 Q/DQ of either profile) run by OpenVINO on
the CPU (``pip install 'resdeploy[openvino]'``).

``openvino.Core().compile_model`` with the latency hint for batch 1 and the throughput hint for
larger batches, a batch then split over the plugin's optimal number of infer requests running in
parallel streams (one request on a throughput-hinted model would use one stream: measured here,
ResNet-18 INT8 at batch 8 took 1.9 ms that way, 1.55 ms with the latency hint and 1.26 ms split
over two requests), and an f32 inference precision: OpenVINO's default on CPUs with bf16 support
would run an FP32 model in bf16, changing its numerics, and for Q/DQ models it measured slower
here than f32 (OpenVINO's low-precision transformations turn the Q/DQ pairs into int8 kernels
either way).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec
from .registry import register_backend

__all__ = ["OpenVinoBackend", "OpenVinoSession", "compile_config"]

_OV_DTYPES = {"f32": "float32", "f16": "float16", "u8": "uint8", "i8": "int8", "i32": "int32", "i64": "int64"}


def compile_config(options: BackendOptions) -> dict[str, str]:
    """The CPU plugin's settings for this session (string keys: the same in every OpenVINO release)."""
    batch = options.batch_hint or 1
    config = {"PERFORMANCE_HINT": "LATENCY" if batch <= 1 else "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    return config


@dataclass
class OpenVinoSession(Session):
    requests: list[Any] = field(default_factory=list)  # 1 (latency hint) or the optimal number (throughput)
    compiled: Any = None

    def _one(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.requests[0].infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        by_name = {out.get_any_name(): value for out, value in results.items()}
        return {n: np.array(by_name[n]) for n in self.output_names}

    def _split(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The batch split over the requests, run in parallel streams (no callbacks: plain waits)."""
        parts = np.array_split(x, min(len(self.requests), len(x)))
        used = self.requests[: len(parts)]
        for request, part in zip(used, parts, strict=True):
            request.start_async({self.input_name: np.ascontiguousarray(part)})
        for request in used:
            request.wait()
        return {n: np.concatenate([np.array(r.get_tensor(n).data) for r in used]) for n in self.output_names}

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed[self.input_name]
        if len(self.requests) <= 1 or len(x) <= 1:
            return self._one(feed)
        return self._split(x)

    def close(self) -> None:
        self.requests = []
        self.compiled = None


@register_backend
class OpenVinoBackend(Backend):
    name = "ov-cpu"
    order = 30
    kinds = ("onnx",)
    summary = "OpenVINO on the CPU (pip install 'resdeploy[openvino]')"

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return "OpenVINO is not installed; pip install 'resdeploy[openvino]'"
        return None

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailableError(f"backend {self.name} is unavailable: {reason}")
        import openvino as ov

        assert artifact.path is not None
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(artifact.path)), "CPU", compile_config(options))
        inputs = []
        for port in compiled.inputs:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            inputs.append(TensorSpec(port.get_any_name(), _OV_DTYPES.get(port.get_element_type().get_type_name(),
                                                                          "float32"), shape))
        n = 1
        if compile_config(options)["PERFORMANCE_HINT"] == "THROUGHPUT":
            n = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        return OpenVinoSession(backend=self.name, artifact=artifact, inputs=inputs,
                               output_names=[o.get_any_name() for o in compiled.outputs], device="cpu",
                               requests=[compiled.create_infer_request() for _ in range(n)], compiled=compiled)
