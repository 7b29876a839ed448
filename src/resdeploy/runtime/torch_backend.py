"""The FP32 reference: a MODEL spec run eagerly by torch (CPU or CUDA, TF32 off)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .artifact import Artifact
from .base import Backend, BackendOptions, Session, Timing


@dataclass
class TorchSession(Session):
    module: Any = None

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.timed(feed)[0]

    def timed(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        import time

        import torch

        x = next(iter(feed.values()))
        if self.device == "cpu":
            start = time.perf_counter_ns()
            with torch.inference_mode():
                out = self.module(torch.from_numpy(x)).numpy()
            return {"logits": out}, Timing((time.perf_counter_ns() - start) / 1e6)
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
        return {"logits": out}, Timing(
            compute_ms=events[1].elapsed_time(events[2]),
            h2d_ms=events[0].elapsed_time(events[1]),
            d2h_ms=events[2].elapsed_time(events[3]),
        )


class TorchBackend(Backend):
    name = "torch"
    kinds = ("model",)

    def __init__(self, device: str = "cpu") -> None:
        self.device = device  # type: ignore[misc]

    def unavailable_reason(self) -> str | None:
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                return "torch sees no CUDA device; run the torch backend on the CPU"
        return None

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        import torch

        if self.device == "cpu" and options.threads:
            torch.set_num_threads(options.threads)
        if self.device.startswith("cuda"):
            # The FP32 reference must be FP32: no TF32 in matmuls or convolutions.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        loaded = artifact.load_model()
        module = loaded.module.to(self.device).eval()
        return TorchSession(backend=self.name, artifact=artifact, device=self.device, module=module)
