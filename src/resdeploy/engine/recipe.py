"""Which TensorRT recipe for which TensorRT release (pure logic, no TensorRT needed).

| TensorRT | INT8 from a Q/DQ ONNX | FP16 | FP32 | DLA |
| --- | --- | --- | --- | --- |
| 8.6 (JetPack 6.0) | weakly typed; BuilderFlag.INT8 + FP16 | BuilderFlag.FP16 | TF32 cleared | FP16 flag + GPU fallback |
| 10.x (JetPack 6.1/6.2, 7.0/7.1) | STRONGLY_TYPED, no precision flags | FP16-typed ONNX, strongly typed | strongly typed, TF32 cleared | weakly typed, as trtexec: FP16 flag + GPU fallback |
| 11.x (JetPack 7.2.2+, desktops) | strong typing always on, precision flags removed | FP16-typed ONNX | TF32 cleared | 11.4.1+ only, strongly typed, GPU fallback |

Sources: NVIDIA/TensorRT release branches (``python/src/infer/pyCore.cpp`` for the enums,
``samples/common/sampleOptions.cpp`` and ``sampleEngines.cpp`` for what trtexec does), the
developer guide ("Strongly typed networks", "Explicit quantization", "Working with DLA") and
the 11.4.1 release notes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ..errors import UsageError

__all__ = [
    "FAMILIES",
    "BuildConfig",
    "Family",
    "Recipe",
    "TrtVersion",
    "choose_recipe",
    "family",
    "format_command",
    "parse_version",
    "profile_shapes",
    "trtexec_command",
]

# TensorRT-RTX's ComputeCapability enum (SM75 ... SM121, CURRENT = the GPU of the build machine).
RTX_TARGETS = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89", "12.0": "SM120", "12.1": "SM121",
               "current": "CURRENT"}


@dataclass(frozen=True)
class Family:
    """One NVIDIA builder family: a row of the recipe table. Everything that differs between
    TensorRT and TensorRT-RTX in resdeploy's build path is a field here, not a branch elsewhere."""

    name: str  # `--runtime` value, backend name and the record's "builder.family"
    module: str  # its Python module
    label: str  # for messages
    cli: str  # its command-line tool
    needs_gpu_to_build: bool  # TensorRT builds on (and for) the GPU it runs on; TensorRT-RTX ahead of time
    timing_cache: bool  # TensorRT-RTX's timing-cache calls are no-ops (deprecated in 1.2)
    dla: bool
    uint8_qdq: bool  # its parser reads a uint8 Q/DQ with zero point 0 (seen: TensorRT-RTX 1.7.1)
    compute_capabilities: bool  # targets chosen with --compute-capability


FAMILIES = {
    "tensorrt": Family("tensorrt", "tensorrt", "TensorRT", "trtexec", needs_gpu_to_build=True, timing_cache=True,
                       dla=True, uint8_qdq=False, compute_capabilities=False),
    "tensorrt-rtx": Family("tensorrt-rtx", "tensorrt_rtx", "TensorRT-RTX", "tensorrt_rtx", needs_gpu_to_build=False,
                           timing_cache=False, dla=False, uint8_qdq=True, compute_capabilities=True),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise UsageError(f"unknown builder {name!r}; choose from auto, {', '.join(FAMILIES)}")
    return FAMILIES[name]


QDQ_TRANSLATOR = "NVIDIA's qdq-translator (Deep-Learning-Accelerator-SW/tools/qdq-translator)"


@dataclass(frozen=True)
class BuildConfig:
    """Options of ``resdeploy build``; the CLI takes its defaults from here."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int | None = None  # None: TensorRT's default (all device memory)
    timing_cache: str | None = None
    dla_core: int | None = None
    debug_tensors: bool = False  # mark unfused tensors as debug tensors (TensorRT 10.12+), for verify
    # TensorRT-RTX targets, e.g. ("8.6", "12.0") or ("current",); () = its default portable set
    compute_capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for cc in self.compute_capabilities:
            if cc not in RTX_TARGETS:
                raise UsageError(f"--compute-capability {cc} is not a TensorRT-RTX target; choose from "
                                 f"{', '.join(RTX_TARGETS)}")
        if "current" in self.compute_capabilities and len(self.compute_capabilities) > 1:
            raise UsageError("--compute-capability current (the GPU here) must be the only target")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UsageError(
                f"batch profile must satisfy 1 <= --min-batch <= --opt-batch <= --max-batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UsageError(f"--workspace is in MiB and must be at least 1, got {self.workspace_mib}")
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise UsageError(f"--dla-core must be 0 or more, got {self.dla_core}")
            if not self.min_batch == self.opt_batch == self.max_batch:
                raise UsageError(
                    "DLA needs a static shape (a dynamic profile sends every DLA layer to the GPU); "
                    "give --min-batch = --opt-batch = --max-batch"
                )


@dataclass(frozen=True)
class TrtVersion:
    """A TensorRT release: up to four fields (major.minor.patch.build); absent ones are None."""

    major: int
    minor: int = 0
    patch: int | None = None
    build: int | None = None

    @property
    def generation(self) -> str:
        return "8.6" if self.major == 8 else str(self.major)

    def at_least(self, major: int, minor: int = 0, patch: int = 0) -> bool:
        return (self.major, self.minor, self.patch or 0) >= (major, minor, patch)

    def __str__(self) -> str:
        parts = [self.major, self.minor, self.patch, self.build]
        return ".".join(str(p) for p in parts if p is not None)


def parse_version(text: str, builder: str = "tensorrt") -> TrtVersion:
    """``8.6``, ``10.3``, ``10.13.3.9``, ``11.4.1`` -> :class:`TrtVersion`; refuses what resdeploy
    does not build for (8.5 and older: JetPack 5 ships Python 3.8, below requires-python).
    TensorRT-RTX releases are 1.x (1.7.1 is resdeploy's floor: 1.4-1.6 fail INT8 builds without a GPU)."""
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?(?:[.+-].*)?", text.strip())
    label = family(builder).label
    if not m:
        example = "1.7 or 1.7.1" if builder == "tensorrt-rtx" else "8.6, 10.3, 10.13 or 11.4.1"
        raise UsageError(f"cannot read {label} version {text!r}; write it as {example}")
    major, minor, patch, build = (int(g) if g is not None else None for g in m.groups())
    assert major is not None
    version = TrtVersion(major, minor or 0, patch, build)
    if builder == "tensorrt-rtx":
        if major == 1:
            return version
        raise UsageError(f"TensorRT-RTX {text} is not a TensorRT-RTX release (1.x); for TensorRT {text} use --runtime tensorrt")
    if (major == 8 and version.minor >= 6) or major in (10, 11):
        return version
    raise UsageError(
        f"TensorRT {text} is not supported; resdeploy builds for 8.6 (JetPack 6.0), 10.x and 11.x "
        "(JetPack 5's TensorRT 8.5 comes with Python 3.8, below resdeploy's Python 3.10)"
    )


@dataclass(frozen=True)
class Recipe:
    version: str  # as given or installed, e.g. "10.3" or "8.6.2.3"
    generation: str  # "8.6", "10" or "11"
    precision: str
    strongly_typed: bool  # 10 (without DLA) and 11; only 10 takes the creation flag (11 ignores it)
    set_flags: tuple[str, ...] = ()  # BuilderFlag names
    clear_flags: tuple[str, ...] = ()
    dla_core: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    builder: str = "tensorrt"  # a key of FAMILIES
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets; () = its default set

    @property
    def family(self) -> Family:
        return FAMILIES[self.builder]

    @property
    def creation_flag(self) -> str | None:
        """The NetworkDefinitionCreationFlag to set: EXPLICIT_BATCH on 8.6 (implicit batch is
        gone in 10 and the flag ignored), STRONGLY_TYPED on 10, none on 11 and TensorRT-RTX
        (always strong)."""
        if self.generation == "8.6":
            return "EXPLICIT_BATCH"
        if self.generation == "10" and self.strongly_typed:
            return "STRONGLY_TYPED"
        return None


def _check_dla(version: TrtVersion, precision: str) -> None:
    """Refuse DLA builds this TensorRT cannot make, saying what would work instead."""
    if version.major == 11:
        if not version.at_least(11, 4, 1):
            where = "DLA only on Windows on Arm" if version.at_least(11, 4) else "no DLA at all"
            raise UsageError(
                f"TensorRT {version} has {where}; DLA on Jetson AGX Orin needs TensorRT 11.4.1+ (JetPack 7.2.2+) "
                "or a 10.x release up to 10.7; drop --dla-core to build for the GPU"
            )
        if precision == "fp32":
            raise UsageError(
                "DLA runs FP16 or INT8 and TensorRT 11 takes precision from the ONNX's types; "
                "quantize --precision fp16 first, then build that ONNX for DLA"
            )
        return
    if precision == "int8":
        raise UsageError(
            f"DLA on TensorRT {version.generation} takes INT8 only through implicit quantization (a calibration "
            f"cache), not a Q/DQ ONNX; build the FP16 or FP32 ONNX for DLA, or convert this one with {QDQ_TRANSLATOR}"
        )


def _rtx_recipe(version: TrtVersion, precision: str, config: BuildConfig) -> Recipe:
    """TensorRT-RTX: TensorRT 11's API (strongly typed, no precision flags), built ahead of time
    for the compute capabilities asked for (default: its portable set)."""
    notes = ["strongly typed: each layer runs in the type the ONNX gives it; no precision flags",
             "compute capabilities: " + (", ".join(config.compute_capabilities) if config.compute_capabilities
                                         else "TensorRT-RTX's default portable set (Ampere and later; 7.5 only when named)")]
    if precision == "int8" and not version.at_least(1, 7, 1):
        notes.append("TensorRT-RTX 1.4-1.6 were seen to fail INT8 Q/DQ builds without a GPU (MyelinCheckException); "
                      "1.7.1 builds them")
    clear_flags = ("TF32",) if precision == "fp32" else ()
    return Recipe(str(version), "rtx", precision, True, (), clear_flags, None, tuple(notes),
                  builder="tensorrt-rtx", compute_capabilities=config.compute_capabilities)


def _check_family(fam: Family, config: BuildConfig) -> None:
    """Refuse options the family has no use for (its row of FAMILIES says which)."""
    if config.dla_core is not None and not fam.dla:
        raise UsageError(f"{fam.label} has no DLA; drop --dla-core, or build for a Jetson with --runtime tensorrt")
    if config.timing_cache and not fam.timing_cache:
        raise UsageError(f"{fam.label} has no timing cache (its timing-cache calls are no-ops since 1.2; it caches "
                         "JIT-compiled kernels at run time instead); drop --timing-cache")
    if config.compute_capabilities and not fam.compute_capabilities:
        raise UsageError(f"--compute-capability is for TensorRT-RTX (--runtime tensorrt-rtx); {fam.label} builds for "
                         "the GPU it runs on")


def choose_recipe(trt_version: str, precision: str, config: BuildConfig, builder: str = "tensorrt") -> Recipe:
    """The builder settings for this release of ``builder`` (a key of FAMILIES) and this ONNX
    precision (fp32|fp16|int8)."""
    version = parse_version(trt_version, builder)
    gen = version.generation
    if precision not in ("fp32", "fp16", "int8"):
        raise UsageError(f"cannot build an engine from a {precision} ONNX; give an FP32, FP16 or INT8 Q/DQ ONNX")
    _check_family(family(builder), config)
    if builder == "tensorrt-rtx":
        return _rtx_recipe(version, precision, config)
    dla = config.dla_core is not None
    if dla:
        _check_dla(version, precision)
    notes: list[str] = []
    set_flags: list[str] = []
    # 8.6 is weakly typed; so is DLA on 10.x, as trtexec builds it (FP16 flag + GPU fallback).
    strongly_typed = gen == "11" or (gen == "10" and not dla)
    if not strongly_typed:
        if precision == "int8":
            set_flags += ["INT8", "FP16"]  # explicit Q/DQ still needs INT8; FP16 for the unquantized rest
        elif precision == "fp16" or dla:
            set_flags.append("FP16")
    else:
        notes.append("strongly typed: each layer runs in the type the ONNX gives it; no precision flags")
    if dla:
        set_flags.append("GPU_FALLBACK")
        notes.append("layers DLA cannot run fall back to the GPU; the build log says which")
        if gen == "10" and version.at_least(10, 8):
            notes.append("TensorRT 10.7 was the last 10.x release with DLA on new JetPacks; this build fails "
                         "if the installed TensorRT reports no DLA core")
    clear_flags = ("TF32",) if precision == "fp32" else ()  # an FP32 engine must match the FP32 reference
    return Recipe(str(version), gen, precision, strongly_typed,
                  tuple(set_flags), clear_flags, config.dla_core, tuple(notes))


def profile_shapes(input_shape: tuple[int | None, ...], config: BuildConfig) -> dict[str, tuple[int, ...]]:
    """min/opt/max shapes of the one image input; a static-batch ONNX allows only its batch."""
    chw = tuple(int(d) for d in input_shape[1:] if d is not None)
    if len(chw) != 3:
        raise UsageError(f"input shape {input_shape} is not (N, C, H, W) with fixed C, H, W")
    static = input_shape[0]
    batches = (config.min_batch, config.opt_batch, config.max_batch)
    if static is not None and set(batches) != {static}:
        raise UsageError(
            f"the ONNX has a static batch of {static}; build with --min-batch {static} --opt-batch {static} "
            f"--max-batch {static}, or export with a dynamic batch"
        )
    return {name: (b, *chw) for name, b in zip(("min", "opt", "max"), batches, strict=True)}


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_command(
    onnx_path: str,
    plan_path: str,
    *,
    input_name: str,
    shapes: dict[str, tuple[int, ...]],
    recipe: Recipe,
    config: BuildConfig,
) -> list[str]:
    """The trtexec command line equivalent to ``resdeploy build`` for ``recipe``'s release.

    ``--memPoolSize=workspace:N`` (MiB) exists from 8.4 on (8.6 still takes the deprecated
    ``--workspace``); ``--stronglyTyped`` only on 10.x, where it disables ``--fp16/--int8``; 11.x
    has neither precision flags nor a typing flag.
    """
    cmd = [recipe.family.cli, f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        cmd.append(f"{flag}={input_name}:{_dims(shapes[key])}")
    if recipe.builder == "tensorrt-rtx":
        return cmd + _rtx_options(recipe, config)
    if recipe.generation == "10" and recipe.strongly_typed:
        cmd.append("--stronglyTyped")
    if "INT8" in recipe.set_flags:
        cmd.append("--int8")
    if "FP16" in recipe.set_flags:
        cmd.append("--fp16")
    if "TF32" in recipe.clear_flags:
        cmd.append("--noTF32")
    if config.workspace_mib is not None:
        cmd.append(f"--memPoolSize=workspace:{config.workspace_mib}")
    if config.timing_cache:
        cmd.append(f"--timingCacheFile={config.timing_cache}")
    if recipe.dla_core is not None:
        cmd.append(f"--useDLACore={recipe.dla_core}")
        if "GPU_FALLBACK" in recipe.set_flags:
            cmd.append("--allowGPUFallback")
    return cmd


def _rtx_options(recipe: Recipe, config: BuildConfig) -> list[str]:
    """tensorrt_rtx's flags (NVIDIA's TensorRT-RTX docs, "CPU-Only AOT"): ``--computeCapabilities=86,120``
    or ``--useGpu`` for the GPU here; ``--skipInference`` builds without running (no GPU needed).
    Its CLI has no documented TF32 switch: an FP32 engine from the CLI may use TF32 where the
    Python build clears it."""
    cmd = []
    targets = [c for c in recipe.compute_capabilities if c != "current"]
    if targets:
        cmd.append("--computeCapabilities=" + ",".join(c.replace(".", "") for c in targets))
    if "current" in recipe.compute_capabilities:
        cmd.append("--useGpu")
    if config.workspace_mib is not None:
        cmd.append(f"--memPoolSize=workspace:{config.workspace_mib}")
    cmd.append("--skipInference")
    return cmd


def format_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
