"""``resdeploy build``: a TensorRT or TensorRT-RTX engine from an FP32, FP16 or INT8 (Q/DQ) ONNX,
with the recipe of the installed release of that builder family (a row of
:data:`~resdeploy.engine.recipe.FAMILIES`), and a JSON record beside the engine.

Composed of small steps in the manner of Polygraphy's loaders (``NetworkFromOnnxPath`` ->
``CreateConfig`` -> ``EngineBytesFromNetwork``): :func:`network_from_onnx`,
:func:`create_config`, :func:`engine_bytes`; each checks what TensorRT returns
(``add_optimization_profile`` gives -1 on an invalid profile, ``set_timing_cache`` False for a
cache from another device or release, ``build_serialized_network`` None on failure).

TensorRT (8.6/10.x/11.x) NOT RUN BY THIS PROJECT ON A GPU: written from the TensorRT Python API
documentation and the release branches' bindings, checked with mypy against tensorrt-stubs (10.13
API) and unit-tested against a fake that fails where TensorRT fails (``tests/engine/fake_tensorrt.py``).
TensorRT-RTX builds ahead of time without a GPU: the tests run NVIDIA's own parser and builder.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, _io, _onnx
from .._tensorrt import RTX_INSTALL_HINT, cuda_device, import_builder, install_hint
from ..errors import BackendUnavailableError, BuildError, UsageError
from .onnx_check import check_readable
from .recipe import FAMILIES, RTX_TARGETS, BuildConfig, Family, Recipe, choose_recipe, profile_shapes
from .record import RECORD_SCHEMA, record_path
from .trt_logging import make_logger

if TYPE_CHECKING:  # typed by tensorrt-stubs in `make typecheck-trt`
    import onnx
    import tensorrt as trt

log = logging.getLogger(__name__)

__all__ = ["BuildResult", "OnnxInfo", "build_engine", "create_config", "engine_bytes", "inspect_onnx",
           "network_from_onnx", "resolve_builder"]


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
    trt = importlib.import_module(recipe.family.module)
    flags = 0
    if recipe.creation_flag is not None:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, recipe.creation_flag))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    dla_flag = getattr(getattr(trt, "OnnxParserFlag", None), "ADJUST_FOR_DLA", None)
    if recipe.dla_core is not None and recipe.generation == "11" and dla_flag is not None:
        parser.set_flag(dla_flag)  # 11.4.1+: reshape layers to suit DLA where it can
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"{recipe.family.label}'s ONNX parser rejected {onnx_path}: {errors or 'no detail'}")
    if debug_tensors:
        if not hasattr(network, "mark_unfused_tensors_as_debug_tensors"):
            raise UsageError(f"debug tensors that keep fusion need TensorRT 10.12 or newer (this is {trt.__version__}); "
                             "compare layer by layer with `polygraphy run ... --trt --onnxrt` instead")
        network.mark_unfused_tensors_as_debug_tensors()
    return network, parser


def _parser_error(error: Any) -> str:
    """One line per parser error: the node, then the first line that says why (NVIDIA's text
    spans lines: "Invalid Node - NAME", the reason, then CUDA noise on a machine without a GPU)."""
    lines = [ln.strip() for ln in str(error.desc()).splitlines()
             if ln.strip() and not ln.startswith(("Invalid Node", "[checkMacros", "Node name:"))]
    node = error.node_name() if hasattr(error, "node_name") else ""
    text = lines[0] if lines else "no detail"
    return f"{node}: {text}" if node and node not in text else text


def _set_profile(trt: Any, builder: trt.Builder, cfg: trt.IBuilderConfig, input_name: str,
                 shapes: dict[str, tuple[int, ...]]) -> None:
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
    cache = cfg.create_timing_cache(data)  # None for bytes it cannot read (as Polygraphy guards it)
    if cache is not None and cfg.set_timing_cache(cache, False):
        state.loaded = bool(data)
        return state
    log.warning("TensorRT rejected the timing cache %s (unreadable, or built on another GPU or TensorRT release); "
                "starting an empty one and overwriting it after the build", path)
    state.rejected = True
    empty = cfg.create_timing_cache(b"")
    if empty is None or not cfg.set_timing_cache(empty, False):
        raise BuildError("TensorRT rejected even an empty timing cache; drop --timing-cache")
    return state


def _set_dla(trt: Any, builder: trt.Builder, cfg: trt.IBuilderConfig, core: int) -> None:
    available = int(builder.num_DLA_cores)
    if core >= available:
        raise UsageError(f"--dla-core {core}: this device has {available} DLA core(s) with this TensorRT; "
                         "drop --dla-core to build for the GPU")
    cfg.default_device_type = trt.DeviceType.DLA
    cfg.DLA_core = core


def create_config(builder: trt.Builder, recipe: Recipe, config: BuildConfig, input_name: str,
                  shapes: dict[str, tuple[int, ...]]) -> tuple[trt.IBuilderConfig, CacheState]:
    """The builder configuration: flags, workspace pool, DLA, compute capabilities (TensorRT-RTX),
    profile, timing cache, progress."""
    trt = importlib.import_module(recipe.family.module)
    cfg = builder.create_builder_config()
    for name in recipe.set_flags:
        cfg.set_flag(getattr(trt.BuilderFlag, name))
    for name in recipe.clear_flags:
        cfg.clear_flag(getattr(trt.BuilderFlag, name))
    if config.workspace_mib is not None:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if recipe.dla_core is not None:
        _set_dla(trt, builder, cfg, recipe.dla_core)
    if recipe.compute_capabilities:
        _set_compute_capabilities(trt, cfg, recipe.compute_capabilities)
    _set_profile(trt, builder, cfg, input_name, shapes)
    if config.debug_tensors:  # the inspector then names each layer's ONNX nodes, which verify maps debug tensors by
        cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    cache = CacheState(None)
    if recipe.family.timing_cache:
        cache = _set_timing_cache(cfg, Path(config.timing_cache) if config.timing_cache else None)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        cfg.progress_monitor = monitor
    return cfg, cache


def _set_compute_capabilities(trt: Any, cfg: Any, targets: tuple[str, ...]) -> None:
    """TensorRT-RTX's targets ("CPU-Only AOT": ``num_compute_capabilities`` then one per index)."""
    cfg.num_compute_capabilities = len(targets)
    for i, cc in enumerate(targets):
        if not cfg.set_compute_capability(getattr(trt.ComputeCapability, RTX_TARGETS[cc]), i):
            raise UsageError(f"TensorRT-RTX refused compute capability {cc}; choose from {', '.join(RTX_TARGETS)}")


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
        raise BuildError("the builder could not build the engine (see the log above); rerun with --debug for the builder log")
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


def resolve_builder(runtime: str = "auto") -> tuple[Family, Any]:
    """The builder family and its module: ``auto`` is TensorRT where it is importable, else
    TensorRT-RTX; without either the error names both."""
    names = ("tensorrt", "tensorrt-rtx") if runtime == "auto" else (runtime,)
    for name in names:
        if name not in FAMILIES:
            raise UsageError(f"unknown --runtime {name!r}; choose from auto, {', '.join(FAMILIES)}")
        trt = import_builder(FAMILIES[name].module)
        if trt is not None:
            return FAMILIES[name], trt
    hints = {"tensorrt": install_hint(), "tensorrt-rtx": RTX_INSTALL_HINT}
    raise BackendUnavailableError(
        ("neither TensorRT nor TensorRT-RTX is installed: " if runtime == "auto" else "")
        + "; ".join(hints[n] for n in names) + "; or print the equivalent command with --print-trtexec")


def check_onnx(path: Path, runtime: str = "auto", generation: str | None = None,
               model: onnx.ModelProto | None = None) -> None:
    """Only what a TensorRT parser reads reaches one: refuse a cpu-profile INT8 and name the first
    node it would reject. Without a family or release, the rules every parser shares. ``model``:
    ``path`` already loaded, so that checking for several builders reads the file once."""
    builder = "tensorrt-rtx" if runtime == "auto" else runtime  # TensorRT-RTX's are the shared (lenient) rules
    check_readable(model if model is not None else _onnx.load(path), path, builder,
                   generation or ("rtx" if builder == "tensorrt-rtx" else "10"))


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    config: BuildConfig = BuildConfig(),
    *,
    device: tuple[str, tuple[int, int]] | None = None,
    runtime: str = "auto",
) -> BuildResult:
    """Build and write ``plan_path`` and its record with ``runtime`` (auto|tensorrt|tensorrt-rtx);
    nothing is written on failure. ``device`` (GPU name, compute capability) is read through
    torch when not given; TensorRT-RTX builds ahead of time and needs none.
    """
    out = _io.check_writable(plan_path)
    info = inspect_onnx(onnx_path)
    model = _onnx.load(info.path)
    check_onnx(info.path, runtime, model=model)  # the same refusal with or without NVIDIA's libraries
    fam, trt = resolve_builder(runtime)
    if fam.needs_gpu_to_build:
        device = device or cuda_device()
        if device is None:
            raise BackendUnavailableError("TensorRT needs a CUDA GPU and none is visible; use --print-trtexec to "
                                          "build elsewhere, or --runtime tensorrt-rtx to build ahead of time here")
    recipe = choose_recipe(trt.__version__, info.precision, config, fam.name)
    check_onnx(info.path, fam.name, recipe.generation, model=model)
    del model  # the parser reads the file itself
    shapes = profile_shapes(info.input_shape, config)
    start = time.perf_counter()
    logger = make_logger(trt)
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


def _record(trt_version: str, device: tuple[str, tuple[int, int]] | None, recipe: Recipe, config: BuildConfig,
            info: OnnxInfo, shapes: dict[str, tuple[int, ...]], seconds: float, cache: CacheState) -> dict[str, Any]:
    targets: list[str] | str = list(recipe.compute_capabilities) or "default"
    if not recipe.family.compute_capabilities:
        targets = [f"{device[1][0]}.{device[1][1]}"] if device else []
    return {
        "schema": RECORD_SCHEMA,
        "builder": {"family": recipe.builder, "name": recipe.family.label, "version": trt_version,
                    "module": recipe.family.module},
        **({"tensorrt_version": trt_version} if recipe.builder == "tensorrt" else {}),
        "gpu": device[0] if device else None,
        "compute_capability": list(device[1]) if device else None,
        "compute_capabilities_targeted": targets,
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
