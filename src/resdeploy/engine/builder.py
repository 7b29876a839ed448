"""``resdeploy build``: a TensorRT engine from an FP32, FP16 or INT8 (Q/DQ) ONNX, with the
recipe of the installed TensorRT release, and a JSON record beside the plan.

Composed of small steps in the manner of Polygraphy's loaders (``NetworkFromOnnxPath`` ->
``CreateConfig`` -> ``EngineBytesFromNetwork``): :func:`network_from_onnx`,
:func:`create_config`, :func:`engine_bytes`; each checks what TensorRT returns
(``add_optimization_profile`` gives -1 on an invalid profile, ``set_timing_cache`` False for a
cache from another device or release, ``build_serialized_network`` None on failure).

NOT RUN BY THIS PROJECT ON A GPU: written from the TensorRT Python API documentation and the
release branches' bindings, checked with mypy against tensorrt-stubs (10.13 API) and
unit-tested against a fake that fails where TensorRT fails (``tests/engine/fake_tensorrt.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, _io, _onnx
from .._tensorrt import cuda_device, import_tensorrt, install_hint
from ..errors import BackendUnavailableError, BuildError, UsageError
from .recipe import BuildConfig, Recipe, choose_recipe, profile_shapes
from .record import RECORD_SCHEMA, record_path
from .trt_logging import make_logger

if TYPE_CHECKING:  # typed by tensorrt-stubs in `make typecheck-trt`
    import tensorrt as trt

log = logging.getLogger(__name__)

__all__ = ["BuildResult", "OnnxInfo", "build_engine", "create_config", "engine_bytes", "inspect_onnx",
           "network_from_onnx"]


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    input_name: str
    input_shape: tuple[int | None, ...]
    precision: str
    metadata: dict[str, str]
    sha256: str


@dataclass
class BuildResult:
    plan: Path
    record: dict[str, Any]
    seconds: float


@dataclass
class CacheState:
    """What happened to ``--timing-cache``: loaded, rejected by TensorRT, or absent."""

    path: Path | None
    loaded: bool = False
    rejected: bool = False


def inspect_onnx(path: str | Path) -> OnnxInfo:
    """What the build needs to know of the ONNX, without TensorRT."""
    model = _onnx.load(path)
    name, shape = _onnx.image_input(model)
    return OnnxInfo(Path(path), name, shape, _onnx.precision(model), _onnx.metadata(model), _io.sha256_file(path))


def network_from_onnx(builder: trt.Builder, logger: trt.ILogger, onnx_path: Path, recipe: Recipe,
                      debug_tensors: bool = False) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """The network (strongly typed where the recipe says so) parsed from ``onnx_path``; with
    ``debug_tensors`` every tensor that survives fusion is marked for an ``IDebugListener``."""
    import tensorrt as trt

    flags = 0
    if recipe.creation_flag is not None:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, recipe.creation_flag))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    dla_flag = getattr(getattr(trt, "OnnxParserFlag", None), "ADJUST_FOR_DLA", None)
    if recipe.dla_core is not None and recipe.generation == "11" and dla_flag is not None:
        parser.set_flag(dla_flag)  # 11.4.1+: reshape layers to suit DLA where it can
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors or 'no detail'}")
    if debug_tensors:
        if not hasattr(network, "mark_unfused_tensors_as_debug_tensors"):
            raise UsageError(f"debug tensors that keep fusion need TensorRT 10.12 or newer (this is {trt.__version__}); "
                             "compare layer by layer with `polygraphy run ... --trt --onnxrt` instead")
        network.mark_unfused_tensors_as_debug_tensors()
    return network, parser


def _set_profile(builder: trt.Builder, cfg: trt.IBuilderConfig, input_name: str,
                 shapes: dict[str, tuple[int, ...]]) -> None:
    import tensorrt as trt

    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *(trt.Dims(list(shapes[k])) for k in ("min", "opt", "max")))
    if cfg.add_optimization_profile(profile) < 0:
        raise UsageError(f"TensorRT rejected the optimisation profile {shapes} for input {input_name!r}; "
                         "check --min-batch/--opt-batch/--max-batch against the ONNX's input shape")


def _set_timing_cache(cfg: trt.IBuilderConfig, path: Path | None) -> CacheState:
    """Load ``path`` when present; a cache TensorRT rejects (other device or release) is
    replaced by an empty one, said in the log and the record, and rewritten after the build."""
    state = CacheState(path)
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = cfg.create_timing_cache(data)
    if cfg.set_timing_cache(cache, False):
        state.loaded = bool(data)
        return state
    log.warning("TensorRT rejected the timing cache %s (built on another GPU or TensorRT release); "
                "starting an empty one and overwriting it after the build", path)
    state.rejected = True
    if not cfg.set_timing_cache(cfg.create_timing_cache(b""), False):
        raise BuildError("TensorRT rejected even an empty timing cache; drop --timing-cache")
    return state


def _set_dla(builder: trt.Builder, cfg: trt.IBuilderConfig, core: int) -> None:
    import tensorrt as trt

    available = int(builder.num_DLA_cores)
    if core >= available:
        raise UsageError(f"--dla-core {core}: this device has {available} DLA core(s) with this TensorRT; "
                         "drop --dla-core to build for the GPU")
    cfg.default_device_type = trt.DeviceType.DLA
    cfg.DLA_core = core


def create_config(builder: trt.Builder, recipe: Recipe, config: BuildConfig, input_name: str,
                  shapes: dict[str, tuple[int, ...]]) -> tuple[trt.IBuilderConfig, CacheState]:
    """The builder configuration: flags, workspace pool, DLA, profile, timing cache, progress."""
    import tensorrt as trt

    cfg = builder.create_builder_config()
    for name in recipe.set_flags:
        cfg.set_flag(getattr(trt.BuilderFlag, name))
    for name in recipe.clear_flags:
        cfg.clear_flag(getattr(trt.BuilderFlag, name))
    if config.workspace_mib is not None:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if recipe.dla_core is not None:
        _set_dla(builder, cfg, recipe.dla_core)
    _set_profile(builder, cfg, input_name, shapes)
    cache = _set_timing_cache(cfg, Path(config.timing_cache) if config.timing_cache else None)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        cfg.progress_monitor = monitor
    return cfg, cache


def engine_bytes(builder: trt.Builder, network: trt.INetworkDefinition, cfg: trt.IBuilderConfig) -> bytes:
    """Build, with a heartbeat in the log every 15 s (Jetson builds take minutes)."""
    stop = threading.Event()
    start = time.perf_counter()
    beat = threading.Thread(target=_heartbeat, args=(stop, start), daemon=True)
    beat.start()
    try:
        serialized = builder.build_serialized_network(network, cfg)
    finally:
        stop.set()
    if serialized is None:
        raise BuildError("TensorRT could not build the engine (see the log above); rerun with --debug for the builder log")
    return bytes(serialized)


def _progress_monitor(trt: Any) -> Any:
    """An IProgressMonitor (TensorRT 10+) logging build phases; None where it does not exist."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            log.info("build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            log.debug("build: %s done", phase_name)

    return _Monitor()


def _heartbeat(stop: threading.Event, start: float) -> None:
    while not stop.wait(15.0):
        log.info("building the engine... %.0f s", time.perf_counter() - start)


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    config: BuildConfig = BuildConfig(),
    *,
    device: tuple[str, tuple[int, int]] | None = None,
) -> BuildResult:
    """Build and write ``plan_path`` and its record; nothing is written on failure.

    ``device`` (GPU name, compute capability) is read through torch when not given.
    """
    out = _io.check_writable(plan_path)
    info = inspect_onnx(onnx_path)
    if import_tensorrt() is None:
        raise BackendUnavailableError(f"{install_hint()}; or print the equivalent trtexec command with --print-trtexec")
    import tensorrt as trt

    device = device or cuda_device()
    if device is None:
        raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible; use --print-trtexec to build elsewhere")
    recipe = choose_recipe(trt.__version__, info.precision, config)
    shapes = profile_shapes(info.input_shape, config)
    start = time.perf_counter()
    logger = make_logger()
    builder = trt.Builder(logger)
    network, _parser = network_from_onnx(builder, logger, info.path, recipe, config.debug_tensors)
    cfg, cache = create_config(builder, recipe, config, info.input_name, shapes)
    plan = engine_bytes(builder, network, cfg)
    seconds = time.perf_counter() - start
    record = _record(trt.__version__, device, recipe, config, info, shapes, seconds, cache)
    _io.write_bytes(out, plan)
    _io.write_json(record_path(out), record)
    if cache.path is not None:
        _io.write_bytes(cache.path, bytes(cfg.get_timing_cache().serialize()))
    return BuildResult(out, record, seconds)


def _record(trt_version: str, device: tuple[str, tuple[int, int]], recipe: Recipe, config: BuildConfig,
            info: OnnxInfo, shapes: dict[str, tuple[int, ...]], seconds: float, cache: CacheState) -> dict[str, Any]:
    return {
        "schema": RECORD_SCHEMA,
        "tensorrt_version": trt_version,
        "gpu": device[0],
        "compute_capability": list(device[1]),
        "precision": info.precision,
        "recipe": {
            "generation": recipe.generation,
            "strongly_typed": recipe.strongly_typed,
            "set_flags": list(recipe.set_flags),
            "cleared_flags": list(recipe.clear_flags),
            "notes": list(recipe.notes),
        },
        "profile": {info.input_name: {k: list(v) for k, v in shapes.items()}},
        "workspace_mib": config.workspace_mib,
        "dla_core": recipe.dla_core,
        "debug_tensors": config.debug_tensors,
        "timing_cache": ({"path": str(cache.path), "loaded": cache.loaded, "rejected": cache.rejected}
                         if cache.path is not None else None),
        "source_onnx": {"path": str(info.path), "sha256": info.sha256},
        "onnx_metadata": info.metadata,
        "build_seconds": round(seconds, 2),
        "resdeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
