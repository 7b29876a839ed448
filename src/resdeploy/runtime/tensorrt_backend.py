"""The ``tensorrt`` backend: a serialized plan run with ``execute_async_v3``.

Device buffers are torch CUDA tensors: torch is already a dependency (on Jetson, NVIDIA's own
wheels), so no pycuda / cuda-python is needed, and its caching allocator, streams and events
serve buffers, async copies and timing. Optional CUDA graphs replay one captured
``execute_async_v3`` per input shape.

NOT RUN BY THIS PROJECT ON A GPU: written from the TensorRT Python API docs (8.5+ name-based
I/O API, unchanged in 10.x/11.x), type-checked with mypy against tensorrt-stubs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..build._trt import INSTALL_HINT, cuda_device, import_tensorrt
from ..build.record import check_compatible, load_record
from ..errors import BackendUnavailableError, UsageError
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, Timing

log = logging.getLogger(__name__)


def tensorrt_unavailable_reason() -> str | None:
    if import_tensorrt() is None:
        return INSTALL_HINT
    if cuda_device() is None:
        return "no CUDA GPU is visible to torch"
    return None


_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool", "INT64": "int64"}


def _torch_dtype(trt_dtype: Any) -> Any:
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in _TORCH_DTYPES:
        raise UsageError(f"engine I/O type {name} is not supported; rebuild with FP32 inputs and outputs")
    return getattr(torch, _TORCH_DTYPES[name])


@dataclass
class TensorRTSession(Session):
    engine: Any = None
    context: Any = None
    stream: Any = None
    trt: Any = None
    use_graphs: bool = False
    _graphs: dict[tuple[int, ...], Any] = field(default_factory=dict)
    _buffers: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)

    def _bind(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Allocate device tensors for this input shape and give TensorRT their addresses."""
        import torch

        bufs = self._buffers.get(shape)
        if bufs is None:
            if not self.context.set_input_shape(self.input_name, shape):
                raise UsageError(f"input shape {shape} is outside the engine's optimisation profile; rebuild with other --min/--max-batch")
            bufs = {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                dims = tuple(self.context.get_tensor_shape(name))
                bufs[name] = torch.empty(dims, dtype=_torch_dtype(self.engine.get_tensor_dtype(name)), device=self.device)
            self._buffers[shape] = bufs
        self.context.set_input_shape(self.input_name, shape)
        for name, t in bufs.items():
            self.context.set_tensor_address(name, t.data_ptr())
        return bufs

    def _execute(self, shape: tuple[int, ...]) -> None:
        import torch

        handle = self.stream.cuda_stream
        if not self.use_graphs:
            if not self.context.execute_async_v3(handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            return
        graph = self._graphs.get(shape)
        if graph is None:
            self.context.execute_async_v3(handle)  # first run outside capture: lazy initialisation
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(handle)
            self._graphs[shape] = graph
        graph.replay()

    def timed(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        import torch

        x = np.ascontiguousarray(next(iter(feed.values())))
        shape = tuple(x.shape)
        bufs = self._bind(shape)
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with torch.cuda.stream(self.stream):
            ev[0].record(self.stream)
            bufs[self.input_name].copy_(torch.from_numpy(x).to(bufs[self.input_name].dtype), non_blocking=True)
            ev[1].record(self.stream)
            self._execute(shape)
            ev[2].record(self.stream)
            outs = {n: bufs[n].to("cpu", non_blocking=False).float().numpy() for n in self.output_names}
            ev[3].record(self.stream)
        ev[3].synchronize()
        return outs, Timing(
            compute_ms=ev[1].elapsed_time(ev[2]), h2d_ms=ev[0].elapsed_time(ev[1]), d2h_ms=ev[2].elapsed_time(ev[3])
        )

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.timed(feed)[0]

    def close(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self.context = None
        self.engine = None


class TensorRTBackend(Backend):
    name = "tensorrt"
    kinds = ("plan",)
    device = "cuda"

    def unavailable_reason(self) -> str | None:
        return tensorrt_unavailable_reason()

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        import torch

        if import_tensorrt() is None:
            raise BackendUnavailableError(f"backend tensorrt is unavailable: {tensorrt_unavailable_reason()}")
        import tensorrt as trt  # typed by tensorrt-stubs in `make typecheck-trt`

        from ..build.trt_logging import make_logger

        assert artifact.path is not None
        record = load_record(artifact.path)
        device_info = cuda_device(options.device)
        if device_info is None:
            raise BackendUnavailableError("backend tensorrt is unavailable: no CUDA GPU is visible to torch")
        capability = device_info[1]
        if record is None:
            log.warning("%s has no record beside it; cannot check its TensorRT version and GPU", artifact.path)
        else:
            check_compatible(artifact.path, record, trt.__version__, capability)
        runtime = trt.Runtime(make_logger())
        engine = runtime.deserialize_cuda_engine(artifact.path.read_bytes())
        if engine is None:
            raise UsageError(f"TensorRT could not deserialize {artifact.path}; rebuild it here with `resdeploy build`")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        device = f"cuda:{options.device}"
        return TensorRTSession(
            backend=self.name,
            artifact=artifact,
            input_name=inputs[0],
            output_names=outputs,
            device=device,
            engine=engine,
            context=context,
            stream=torch.cuda.Stream(device=device),
            trt=trt,
            use_graphs=options.cuda_graphs,
        )
