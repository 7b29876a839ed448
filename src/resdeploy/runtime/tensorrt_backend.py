"""The ``tensorrt`` backend: a serialized plan run with ``execute_async_v3``.

Device buffers are torch CUDA tensors: torch is already a dependency (on Jetson, NVIDIA's own
wheels), so no pycuda / cuda-python is needed, and its caching allocator, streams and events
serve buffers, pinned staging, async copies and timing (:mod:`._cuda`, timed as trtexec times).
Optional CUDA graphs replay one captured ``execute_async_v3`` per input shape and set of buffer
addresses; a capture that fails falls back to running without graphs, as trtexec does. The CUDA
calls sit behind :class:`CudaOps` so that the session's own logic (shapes, tensor addresses, the
CUDA-graph decision, the plan-record check, the DLA core) runs in the tests against a fake
``tensorrt`` on the CPU.

What has run on a real GPU (an H200, no TensorRT there): the session's CUDA half around a
GPU-side stand-in engine (tests/engine/test_tensorrt_cuda.py). TensorRT itself has never run
in this project: the calls into it are written from the TensorRT Python API (release branches'
``python/src/infer/pyCore.cpp``; the name-based I/O API of 8.5+, unchanged in 10.x/11.x) and
type-checked with mypy against tensorrt-stubs.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._tensorrt import cuda_device, import_tensorrt, tensorrt_unavailable_reason
from ..engine.record import check_compatible, load_record
from ..errors import BackendUnavailableError, UsageError
from ._cuda import CudaOps, select_device, timed_on_stream
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


@dataclass
class TensorRTSession(Session):
    engine: Any = None
    context: Any = None
    ops: Any = None  # CudaOps or a test's CPU stand-in
    use_graphs: bool = False
    debug_tensors: dict[str, np.ndarray] = field(default_factory=dict)  # filled by the debug listener
    debug_errors: list[str] = field(default_factory=list)
    _listener: Any = None
    _graphs: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # (shape, addresses) -> graph, None: eager
    _buffers: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)
    _staging: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)

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
            # Host staging in pinned memory, in the engine's I/O types, as trtexec stages it.
            self._staging[shape] = {n: self.ops.pinned(tuple(t.shape), t.dtype) for n, t in bufs.items()}
        for name, t in bufs.items():
            if not context.set_tensor_address(name, t.data_ptr()):
                raise UsageError(f"TensorRT refused the address of tensor {name!r}; rebuild the engine")
        return bufs

    def _execute(self, shape: tuple[int, ...], bufs: dict[str, Any]) -> None:
        handle = self.ops.stream_handle
        context: trt.IExecutionContext = self.context

        def run() -> None:
            if not context.execute_async_v3(handle):
                raise UsageError("TensorRT execute_async_v3 failed (see the log above); rerun with --debug")

        if not self.use_graphs:
            run()
            return
        # A graph replays the addresses it was captured with: key it by them as well as the shape.
        key = (shape, tuple(t.data_ptr() for t in bufs.values()))
        if key not in self._graphs:
            run()  # the first run stays outside capture: TensorRT initialises lazily
            self._graphs[key] = self._capture(run, shape)
            return
        graph = self._graphs[key]
        if graph is None:
            run()
        else:
            graph.replay()

    def _capture(self, run: Callable[[], None], shape: tuple[int, ...]) -> Any:
        """A graph of ``run``, or None (run without graphs) when capture fails, as trtexec falls back."""
        try:
            return self.ops.capture(run)
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager runs
            cause = exc.__context__ or exc
            log.warning("CUDA graph capture failed for input shape %s (%s: %s); running without CUDA graphs",
                        shape, type(cause).__name__, cause)
            self.ops.discard_capture_error()
            return None

    def timed_impl(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        import torch

        x = np.ascontiguousarray(feed[self.input_name])
        shape = tuple(x.shape)
        bufs = self._bind(shape)
        staging = self._staging[shape]
        staging[self.input_name].copy_(torch.from_numpy(x))  # host memcpy (and cast) into pinned memory: untimed
        self.debug_tensors.clear()
        self.debug_errors.clear()

        def copy_in() -> None:
            bufs[self.input_name].copy_(staging[self.input_name], non_blocking=True)

        def copy_out() -> None:
            for n in self.output_names:
                staging[n].copy_(bufs[n], non_blocking=True)

        timing = timed_on_stream(self.ops, copy_in, lambda: self._execute(shape, bufs), copy_out)
        outs = {n: np.array(staging[n].float().numpy()) for n in self.output_names}  # owned: staging is reused
        if self.debug_errors:
            raise UsageError(f"copying debug tensors failed: {self.debug_errors[0]}")
        return outs, timing

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.timed_impl(feed)[0]

    def layer_information(self) -> dict[str, Any] | None:
        """The engine inspector's JSON (``get_engine_information(LayerInformationFormat.JSON)``):
        per layer its inputs, outputs (TensorRT's internal tensor names, the ones a debug listener
        receives) and ONNX-node ``Metadata`` when the engine was built at
        ``ProfilingVerbosity.DETAILED``; layer names only otherwise. None where TensorRT gives none."""
        tensorrt = importlib.import_module("tensorrt")
        engine: trt.ICudaEngine = self.engine
        inspector = engine.create_engine_inspector()
        if inspector is None:
            return None
        inspector.execution_context = self.context
        text = inspector.get_engine_information(tensorrt.LayerInformationFormat.JSON)
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            log.warning("the engine inspector's layer information is not JSON; ignoring it")
            return None
        return doc if isinstance(doc, dict) else None

    def close(self) -> None:
        self._graphs.clear()
        self._buffers.clear()
        self._staging.clear()
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
                on_host = getattr(location, "name", str(location)).endswith("HOST")  # TensorLocation.HOST
                session.debug_tensors[name] = session.ops.to_host(int(addr), dims, torch_dtype(dtype), int(stream),
                                                                  on_host=on_host)
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
    ``backend`` its name) and GPU, deserialise it, name its I/O. ``make_ops`` gives the CUDA side;
    it is called once the plan is known to fit and before the Runtime exists, so the device it
    selects is the one TensorRT deserialises on."""
    if trt is None:
        trt = importlib.import_module("tensorrt")

    from ..engine.trt_logging import make_logger

    assert artifact.path is not None
    record = load_record(artifact.path)
    if record is None:
        log.warning("%s has no record beside it; cannot check its TensorRT version and GPU", artifact.path)
    else:
        check_compatible(artifact.path, record, trt.__version__, device[1], backend)
    ops = make_ops()
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
    summary = "a TensorRT .plan with execute_async_v3 (TensorRT itself never run in this project)"

    def unavailable_reason(self) -> str | None:
        return tensorrt_unavailable_reason()

    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session:
        device = cuda_device(options.device) if import_tensorrt() is not None else None
        if device is None:
            raise BackendUnavailableError(f"backend tensorrt is unavailable: {tensorrt_unavailable_reason()}")
        # The device is made current before the Runtime exists: TensorRT deserialises on the current device.
        return open_plan(artifact, options, lambda: CudaOps(select_device(options.device)), device)
