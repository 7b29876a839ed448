"""The ``tensorrt`` backend: a serialized plan run with ``execute_async_v3``.

Device buffers are torch CUDA tensors: torch is already a dependency (on Jetson, NVIDIA's own
wheels), so no pycuda / cuda-python is needed, and its caching allocator, streams and events
serve buffers, async copies and timing. Optional CUDA graphs replay one captured
``execute_async_v3`` per input shape. The CUDA calls sit behind :class:`CudaOps` so that the
session's own logic (shapes, tensor addresses, the CUDA-graph decision, the plan-record check,
the DLA core) runs in the tests against a fake ``tensorrt`` on the CPU.

NOT RUN BY THIS PROJECT ON A GPU: written from the TensorRT Python API (release branches'
``python/src/infer/pyCore.cpp``; the name-based I/O API of 8.5+, unchanged in 10.x/11.x),
type-checked with mypy against tensorrt-stubs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._tensorrt import cuda_device, import_tensorrt, tensorrt_unavailable_reason
from ..engine.record import check_compatible, load_record
from ..errors import BackendUnavailableError, UsageError
from .artifact import Artifact
from .base import Backend, BackendOptions, Session, TensorSpec, Timing
from .registry import register_backend

if TYPE_CHECKING:  # typed by tensorrt-stubs in `make typecheck-trt`
    import tensorrt as trt

log = logging.getLogger(__name__)

__all__ = ["CudaOps", "TensorRTBackend", "TensorRTSession", "torch_dtype"]

# TensorRT DataType names -> torch dtype names (FP8/INT4/FP4 never appear at a resdeploy engine's I/O).
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
_NUMPY_DTYPES = {"bfloat16": "float32"}  # NumPy has no bfloat16: the host side of a BF16 input is FP32


def torch_dtype(trt_dtype: Any) -> Any:
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in _TORCH_DTYPES:
        raise UsageError(f"engine I/O type {name} is not supported; rebuild with FP32 inputs and outputs")
    return getattr(torch, _TORCH_DTYPES[name])


class CudaOps:
    """The CUDA side of a session, through torch: buffers, a stream, events and graphs."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        import torch

        return torch.empty(shape, dtype=dtype, device=self.device)

    def events(self, n: int) -> list[Any]:
        import torch

        return [torch.cuda.Event(enable_timing=True) for _ in range(n)]

    def on_stream(self) -> Any:
        import torch

        return torch.cuda.stream(self.stream)

    def to_host(self, address: int, shape: tuple[int, ...], dtype: Any, stream: int) -> np.ndarray:
        """A copy of device memory TensorRT owns (a debug tensor), through ``__cuda_array_interface__``."""
        import torch

        torch.cuda.ExternalStream(stream).synchronize()
        typestr = {torch.float32: "<f4", torch.float16: "<f2", torch.int8: "|i1", torch.uint8: "|u1",
                   torch.int32: "<i4", torch.int64: "<i8", torch.bool: "|b1"}.get(dtype)
        if typestr is None:
            raise UsageError(f"debug tensors of type {dtype} are not supported")

        class View:
            def __init__(self) -> None:
                self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (address, True),
                                                 "version": 3}

        return torch.as_tensor(View(), device=self.device).cpu().numpy().copy()

    def capture(self, fn: Callable[[], None]) -> Any:
        """A CUDA graph of ``fn``; ``.replay()`` runs it again."""
        import torch

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            fn()
        return graph


@dataclass
class TensorRTSession(Session):
    engine: Any = None
    context: Any = None
    ops: Any = None  # CudaOps or a test's CPU stand-in
    use_graphs: bool = False
    debug_tensors: dict[str, np.ndarray] = field(default_factory=dict)  # filled by the debug listener
    debug_errors: list[str] = field(default_factory=list)
    _listener: Any = None
    _graphs: dict[tuple[int, ...], Any] = field(default_factory=dict)
    _buffers: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)

    def _bind(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Device tensors for this input shape (allocated once per shape); TensorRT gets their addresses."""
        context: trt.IExecutionContext = self.context
        engine: trt.ICudaEngine = self.engine
        if not context.set_input_shape(self.input_name, shape):
            raise UsageError(f"input shape {shape} is outside the engine's optimisation profile; "
                             "rebuild with other --min-batch/--max-batch")
        bufs = self._buffers.get(shape)
        if bufs is None:
            bufs = {}
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                found = context.get_tensor_shape(name)
                dims = tuple(int(found[k]) for k in range(len(found)))
                bufs[name] = self.ops.empty(dims, torch_dtype(engine.get_tensor_dtype(name)))
            self._buffers[shape] = bufs
        for name, t in bufs.items():
            if not context.set_tensor_address(name, t.data_ptr()):
                raise UsageError(f"TensorRT refused the address of tensor {name!r}; rebuild the engine")
        return bufs

    def _execute(self, shape: tuple[int, ...]) -> None:
        handle = self.ops.stream_handle
        context: trt.IExecutionContext = self.context

        def run() -> None:
            if not context.execute_async_v3(handle):
                raise UsageError("TensorRT execute_async_v3 failed (see the log above); rerun with --debug")

        if not self.use_graphs:
            run()
            return
        graph = self._graphs.get(shape)
        if graph is None:
            run()  # the first run stays outside capture: TensorRT initialises lazily
            graph = self.ops.capture(run)
            self._graphs[shape] = graph
        graph.replay()

    def timed_impl(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        import torch

        x = np.ascontiguousarray(feed[self.input_name])
        shape = tuple(x.shape)
        bufs = self._bind(shape)
        self.debug_tensors.clear()
        self.debug_errors.clear()
        ev = self.ops.events(4)
        with self.ops.on_stream():
            ev[0].record(self.ops.stream)
            bufs[self.input_name].copy_(torch.from_numpy(x).to(bufs[self.input_name].dtype), non_blocking=True)
            ev[1].record(self.ops.stream)
            self._execute(shape)
            ev[2].record(self.ops.stream)
            host = {n: bufs[n].to("cpu", non_blocking=False) for n in self.output_names}
            ev[3].record(self.ops.stream)
        ev[3].synchronize()
        outs = {n: np.array(t.float().numpy()) for n, t in host.items()}  # owned: the buffers are reused
        if self.debug_errors:
            raise UsageError(f"copying debug tensors failed: {self.debug_errors[0]}")
        return outs, Timing(
            compute_ms=ev[1].elapsed_time(ev[2]), h2d_ms=ev[0].elapsed_time(ev[1]), d2h_ms=ev[2].elapsed_time(ev[3])
        )

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.timed_impl(feed)[0]

    def close(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self.context = None
        self.engine = None


def _debug_listener(session: TensorRTSession) -> Any:
    """An ``IDebugListener`` copying each debug tensor to the host into ``session.debug_tensors``."""
    import tensorrt as trt

    class Collector(trt.IDebugListener):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IDebugListener.__init__(self)

        def process_debug_tensor(self, addr: int, location: Any, dtype: Any, shape: Any, name: str,
                                 stream: int) -> None:
            # TensorRT prints and swallows what this raises: keep it to raise after the run.
            try:
                dims = tuple(int(shape[i]) for i in range(len(shape)))
                session.debug_tensors[name] = session.ops.to_host(int(addr), dims, torch_dtype(dtype), int(stream))
            except Exception as exc:  # noqa: BLE001 - re-raised by the session after execute
                session.debug_errors.append(f"{name}: {type(exc).__name__}: {exc}")

    return Collector()


def _collect_debug_tensors(session: TensorRTSession) -> None:
    """Attach the listener and switch the unfused tensors' debug state on (TensorRT 10.12+)."""
    context: trt.IExecutionContext = session.context
    if not hasattr(context, "unfused_tensors_debug_state"):
        raise UsageError("debug tensors need TensorRT 10.12 or newer; compare with `polygraphy run` instead")
    session._listener = _debug_listener(session)
    if not context.set_debug_listener(session._listener):
        raise UsageError("TensorRT refused the debug listener; rebuild the plan with debug tensors marked")
    context.unfused_tensors_debug_state = True
    session.use_graphs = False  # a listener is called between kernels, which a CUDA graph would skip


def deserialize(plan: Path, record: dict[str, Any] | None, logger: trt.ILogger, trt: Any = None) -> trt.ICudaEngine:
    """The engine of ``plan``, on the DLA core its record names (``runtime.DLA_core`` defaults
    to -1, and a DLA engine deserialised without it fails). ``trt``: the ``tensorrt`` module
    (default) or ``tensorrt_rtx``."""
    if trt is None:
        trt = importlib.import_module("tensorrt")
    runtime = trt.Runtime(logger)
    dla_core = (record or {}).get("dla_core")
    if dla_core is not None:
        if dla_core >= runtime.num_DLA_cores:
            raise UsageError(f"{plan} was built for DLA core {dla_core} but this device has "
                             f"{runtime.num_DLA_cores}; rebuild it here with `resdeploy build --dla-core N`")
        runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise UsageError(f"{getattr(trt, '__name__', 'tensorrt')} could not deserialize {plan}; rebuild it here with "
                         "`resdeploy build`")
    return engine


def open_plan(artifact: Artifact, options: BackendOptions, make_ops: Callable[[], Any],
              device: tuple[str, tuple[int, int]], trt: Any = None, backend: str = "tensorrt") -> TensorRTSession:
    """Check the plan's record against this TensorRT (or TensorRT-RTX: ``trt`` is the module,
    ``backend`` its name) and GPU, deserialise it, name its I/O; ``make_ops`` gives the CUDA side
    (called only once the plan is known to fit)."""
    if trt is None:
        trt = importlib.import_module("tensorrt")

    from ..engine.trt_logging import make_logger

    assert artifact.path is not None
    record = load_record(artifact.path)
    if record is None:
        log.warning("%s has no record beside it; cannot check its TensorRT version and GPU", artifact.path)
    else:
        check_compatible(artifact.path, record, trt.__version__, device[1], backend)
    engine = deserialize(artifact.path, record, make_logger(trt), trt)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    specs = []
    for n in inputs:
        dtype = _TORCH_DTYPES[getattr(engine.get_tensor_dtype(n), "name", "FLOAT")]
        dims = engine.get_tensor_shape(n)
        shape = tuple(dims[i] if dims[i] >= 0 else None for i in range(len(dims)))
        specs.append(TensorSpec(n, _NUMPY_DTYPES.get(dtype, dtype), shape))
    ops = make_ops()
    session = TensorRTSession(backend=backend, artifact=artifact, inputs=specs, output_names=outputs,
                              device=ops.device, engine=engine, context=context, ops=ops, use_graphs=options.cuda_graphs)
    if options.debug_tensors:
        _collect_debug_tensors(session)
    return session


@register_backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    order = 40
    kinds = ("plan",)
    device = "cuda"
    summary = "a TensorRT .plan with execute_async_v3 (never run in this project)"

    def unavailable_reason(self) -> str | None:
        return tensorrt_unavailable_reason()

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        device = cuda_device(options.device) if import_tensorrt() is not None else None
        if device is None:
            raise BackendUnavailableError(f"backend tensorrt is unavailable: {tensorrt_unavailable_reason()}")
        return open_plan(artifact, options, lambda: CudaOps(f"cuda:{options.device}"), device)
