"""The FP32 reference: a MODEL spec run eagerly by torch, on the CPU (``torch``) or a CUDA GPU
(``torch-cuda``, TF32 off so that FP32 means FP32)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..export import INPUT_NAME, OUTPUT_NAME
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec, Timing
from .registry import register_backend


@dataclass
class TorchSession(Session):
    module: Any = None

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.timed_impl(feed)[0]

    def timed_impl(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        import torch

        x = feed[self.input_name]
        if self.device == "cpu":
            start = time.perf_counter_ns()
            with torch.inference_mode():
                out = self.module(torch.from_numpy(x)).numpy()
            return {self.output_names[0]: out}, Timing((time.perf_counter_ns() - start) / 1e6)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.inference_mode():
            events[0].record()
            xd = torch.from_numpy(x).to(self.device, non_blocking=False)
            events[1].record()
            yd = self.module(xd)
            events[2].record()
            out = yd.cpu().numpy()
            events[3].record()
        events[3].synchronize()
        return {self.output_names[0]: out}, Timing(
            compute_ms=events[1].elapsed_time(events[2]),
            h2d_ms=events[0].elapsed_time(events[1]),
            d2h_ms=events[2].elapsed_time(events[3]),
        )


@register_backend
class TorchBackend(Backend):
    name = "torch"
    order = 10
    kinds = ("model",)
    summary = "torch eager FP32 on the CPU, the reference"

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        import torch

        if self.device == "cpu" and options.threads:
            torch.set_num_threads(options.threads)
        if self.device.startswith("cuda"):
            # The FP32 reference must be FP32: no TF32 in matmuls or convolutions.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        loaded = artifact.load_model()
        device = self.device if self.device == "cpu" else f"cuda:{options.device}"
        module = loaded.module.to(device).eval()
        spec = TensorSpec(INPUT_NAME, "float32", (None, *loaded.preprocess.input_shape))
        return TorchSession(backend=self.name, artifact=artifact, inputs=[spec], output_names=[OUTPUT_NAME],
                            device=device, module=module)


@register_backend
class TorchCudaBackend(TorchBackend):
    name = "torch-cuda"
    order = 11
    device = "cuda"
    summary = "torch eager FP32 on a CUDA GPU, TF32 off"

    def unavailable_reason(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA device; run the torch backend on the CPU"
        return None
