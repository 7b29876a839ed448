"""``resdeploy build``: a TensorRT engine from an FP32, FP16 or INT8 (Q/DQ) ONNX, with the
recipe of the installed TensorRT generation, and a JSON record beside the plan.

NOT RUN BY THIS PROJECT ON A GPU: written from the TensorRT Python API documentation, checked
with mypy against tensorrt-stubs (10.13 API) and unit-tested against a recording fake.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__, _io, _onnx
from ..errors import BackendUnavailableError, BuildError
from ._trt import INSTALL_HINT, cuda_device, import_tensorrt
from .recipe import BuildConfig, Recipe, choose_recipe, profile_shapes
from .record import RECORD_SCHEMA, record_path
from .trt_logging import make_logger

log = logging.getLogger(__name__)

__all__ = ["BuildResult", "OnnxInfo", "build_engine", "inspect_onnx"]


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


def inspect_onnx(path: str | Path) -> OnnxInfo:
    """What the build needs to know of the ONNX, without TensorRT."""
    model = _onnx.load(path)
    name, shape = _onnx.image_input(model)
    return OnnxInfo(Path(path), name, shape, _onnx.precision(model), _onnx.metadata(model), _io.sha256_file(path))


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
        raise BackendUnavailableError(
            f"{INSTALL_HINT}; or print the equivalent trtexec command with --print-trtexec"
        )
    device = device or cuda_device()
    if device is None:
        raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible; use --print-trtexec to build elsewhere")
    import tensorrt as trt  # typed by tensorrt-stubs in `make typecheck-trt`

    recipe = choose_recipe(trt.__version__, info.precision, config)
    shapes = profile_shapes(info.input_shape, config)
    start = time.perf_counter()

    logger = make_logger()
    builder = trt.Builder(logger)
    flags = 0
    if recipe.generation == "8.6":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    elif recipe.generation == "10":  # 11 is always strongly typed and ignores the flag
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(info.path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT's ONNX parser rejected {info.path}: {errors or 'no detail'}")

    cfg = builder.create_builder_config()
    for name in recipe.set_flags:
        cfg.set_flag(getattr(trt.BuilderFlag, name))
    for name in recipe.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            cfg.clear_flag(getattr(trt.BuilderFlag, name))
    if config.workspace_mib is not None:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if config.dla_core is not None:
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config.dla_core
    profile = builder.create_optimization_profile()
    min_, opt, max_ = (trt.Dims(list(shapes[k])) for k in ("min", "opt", "max"))
    profile.set_shape(info.input_name, min_, opt, max_)
    cfg.add_optimization_profile(profile)

    cache_path = Path(config.timing_cache) if config.timing_cache else None
    cache_loaded = bool(cache_path and cache_path.is_file())
    cache = cfg.create_timing_cache(cache_path.read_bytes() if cache_path and cache_loaded else b"")
    cfg.set_timing_cache(cache, False)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        cfg.progress_monitor = monitor

    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(stop, start), daemon=True)
    beat.start()
    try:
        serialized = builder.build_serialized_network(network, cfg)
    finally:
        stop.set()
    if serialized is None:
        raise BuildError("TensorRT could not build the engine (see the log above); rerun with --debug for the builder log")
    seconds = time.perf_counter() - start

    record = _record(trt.__version__, device, recipe, config, info, shapes, seconds, cache_loaded)
    _io.write_bytes(out, bytes(serialized))
    _io.write_json(record_path(out), record)
    if cache_path is not None:
        _io.write_bytes(cache_path, bytes(cfg.get_timing_cache().serialize()))
    return BuildResult(out, record, seconds)


def _record(
    trt_version: str,
    device: tuple[str, tuple[int, int]],
    recipe: Recipe,
    config: BuildConfig,
    info: OnnxInfo,
    shapes: dict[str, tuple[int, ...]],
    seconds: float,
    cache_loaded: bool,
) -> dict[str, Any]:
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
        "dla_core": config.dla_core,
        "timing_cache": {"path": config.timing_cache, "loaded": cache_loaded} if config.timing_cache else None,
        "source_onnx": {"path": str(info.path), "sha256": info.sha256},
        "onnx_metadata": info.metadata,
        "build_seconds": round(seconds, 2),
        "resdeploy_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


