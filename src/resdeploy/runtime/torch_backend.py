"""The FP32 reference: a MODEL spec run eagerly by torch, on the CPU (``torch``) or a CUDA GPU
(``torch-cuda``, TF32 off so that FP32 means FP32)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..export import INPUT_NAME, OUTPUT_NAME
from ._cuda import CudaOps, select_device, timed_on_stream
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec, Timing
from .registry import register_backend


@dataclass
class TorchSession(Session):
    module: Any = None
    ops: Any = None  # CudaOps on a GPU, None on the CPU
    _buffers: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.timed_impl(feed)[0]

    def timed_impl(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        import torch

        x = feed[self.input_name]
        if self.ops is None:
            start = time.perf_counter_ns()
            with torch.inference_mode():
                out = self.module(torch.from_numpy(x)).numpy()
            return {self.output_names[0]: out}, Timing((time.perf_counter_ns() - start) / 1e6)
        return self._timed_cuda(x)

    def _timed_cuda(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], Timing]:
        """Pinned staging, H2D, forward, D2H on the session's stream, timed as trtexec times."""
        import torch

        shape = tuple(x.shape)
        bufs = self._buffers.get(shape)
        if bufs is None:
            bufs = self._buffers[shape] = {"host_in": self.ops.pinned(shape, torch.float32),
                                          "dev_in": self.ops.empty(shape, torch.float32)}
        bufs["host_in"].copy_(torch.from_numpy(x))  # host memcpy into pinned memory: untimed, as in trtexec
        result: list[Any] = []

        def copy_in() -> None:
            bufs["dev_in"].copy_(bufs["host_in"], non_blocking=True)

        def forward() -> None:
            with torch.inference_mode():
                result.append(self.module(bufs["dev_in"]))

        def copy_out() -> None:
            y = result[0]
            host = bufs.get("host_out")
            if host is None or tuple(host.shape) != tuple(y.shape):
                host = bufs["host_out"] = self.ops.pinned(tuple(y.shape), y.dtype)
            host.copy_(y, non_blocking=True)

        timing = timed_on_stream(self.ops, copy_in, forward, copy_out)
        return {self.output_names[0]: np.array(bufs["host_out"].numpy())}, timing

    def close(self) -> None:
        self._buffers.clear()
        self.module = None


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
        device = "cpu" if self.device == "cpu" else select_device(options.device)
        module = loaded.module.to(device).eval()
        spec = TensorSpec(INPUT_NAME, "float32", (None, *loaded.preprocess.input_shape))
        return TorchSession(backend=self.name, artifact=artifact, inputs=[spec], output_names=[OUTPUT_NAME],
                            device=device, module=module, ops=None if device == "cpu" else CudaOps(device))


@register_backend
class TorchCudaBackend(TorchBackend):
    name = "torch-cuda"
    order = 11
    device = "cuda"
    summary = "torch eager FP32 on a CUDA GPU, TF32 off"

    def unavailable_reason(self) -> str | None:
        import torch

        if torch.version.cuda is None:
            return ("this torch is a CPU-only build; install a CUDA build (pip install torch torchvision --index-url "
                    "https://download.pytorch.org/whl/cu128; on Jetson, NVIDIA's wheels for its JetPack)")
        if not torch.cuda.is_available():
            return "torch sees no CUDA GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES); run the torch backend on the CPU"
        return None
