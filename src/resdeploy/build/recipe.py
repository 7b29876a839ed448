"""Which TensorRT recipe for which TensorRT generation (pure logic, no TensorRT needed).

| TensorRT | INT8 from a Q/DQ ONNX | FP16 | FP32 |
| --- | --- | --- | --- |
| 8.5 / 8.6 (JetPack 5, 6.0) | weakly typed; BuilderFlag.INT8 + FP16 | BuilderFlag.FP16 | TF32 cleared |
| 10.x (JetPack 6.1+, desktops) | STRONGLY_TYPED network, no precision flags | FP16-typed ONNX, strongly typed | strongly typed, TF32 cleared |
| 11.x (JetPack 7, current) | strong typing always on, precision flags removed | FP16-typed ONNX | TF32 cleared |

Sources: TensorRT developer guide ("Strongly typed networks", "Explicit quantization"), the
TensorRT 10 and 11 migration notes, trtexec's --help of each generation.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..errors import UsageError

__all__ = ["BuildConfig", "Recipe", "choose_recipe", "generation", "profile_shapes", "trtexec_command"]

GENERATIONS = ("8.6", "10", "11")


@dataclass(frozen=True)
class BuildConfig:
    """Options of ``resdeploy build``; the CLI takes its defaults from here."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int | None = None  # None: TensorRT's default (all device memory)
    timing_cache: str | None = None
    dla_core: int | None = None

    def __post_init__(self) -> None:
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
class Recipe:
    generation: str  # "8.6" (8.x), "10" or "11"
    precision: str
    strongly_typed: bool  # 10 and 11; only 10 takes the NetworkDefinitionCreationFlag (11 ignores it)
    set_flags: tuple[str, ...] = ()  # BuilderFlag names
    clear_flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def _major_minor(trt_version: str) -> tuple[int, int]:
    parts = [*trt_version.split("."), "0"]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise UsageError(f"cannot read TensorRT version {trt_version!r}; use 8.6, 10 or 11") from None


def generation(trt_version: str) -> str:
    """``8.6.1.6`` -> ``8.6``, ``10.3.0`` -> ``10``, ``11.0`` -> ``11``; older is refused."""
    major, minor = _major_minor(trt_version)
    if major == 8 and minor >= 5:
        return "8.6"
    if major in (10, 11):
        return str(major)
    raise UsageError(f"TensorRT {trt_version} is not supported; resdeploy builds for 8.5/8.6, 10.x and 11.x")


def choose_recipe(trt_version: str, precision: str, config: BuildConfig) -> Recipe:
    """The builder settings for this TensorRT and this ONNX precision (fp32|fp16|int8)."""
    gen = generation(trt_version)
    if precision not in ("fp32", "fp16", "int8"):
        raise UsageError(f"cannot build an engine from a {precision} ONNX; give an FP32, FP16 or INT8 Q/DQ ONNX")
    notes: list[str] = []
    set_flags: list[str] = []
    clear_flags: list[str] = []
    if config.dla_core is not None:
        if precision == "int8":
            raise UsageError(
                "DLA takes INT8 only through implicit quantization, not a Q/DQ ONNX; build an FP16 ONNX for DLA "
                "or convert this one with NVIDIA's qdq-translator"
            )
        if gen == "11" and _major_minor(trt_version)[1] < 4:
            raise UsageError(f"TensorRT {trt_version} has no DLA support (absent in 11.0-11.3); drop --dla-core")
        if precision == "fp32" and gen != "8.6":
            raise UsageError("DLA runs FP16 or INT8 only; quantize --precision fp16 first, then build that ONNX")
        set_flags.append("GPU_FALLBACK")
        notes.append("layers DLA cannot run fall back to the GPU; the build log says which")
    if gen == "8.6":
        strongly_typed = False
        if precision == "int8":
            set_flags += ["INT8", "FP16"]  # explicit Q/DQ still needs INT8; FP16 for the unquantized rest
        elif precision == "fp16" or config.dla_core is not None:
            set_flags.append("FP16")
    else:
        strongly_typed = True
        notes.append("strongly typed: each layer runs in the type the ONNX gives it; no precision flags")
    if precision == "fp32":
        clear_flags.append("TF32")  # an FP32 engine is meant to match the FP32 reference
    return Recipe(gen, precision, strongly_typed, tuple(set_flags), tuple(clear_flags), tuple(notes))


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
    """The trtexec command line equivalent to ``resdeploy build`` for ``recipe.generation``."""
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        cmd.append(f"{flag}={input_name}:{_dims(shapes[key])}")
    if recipe.generation == "8.6":
        if "INT8" in recipe.set_flags:
            cmd.append("--int8")
        if "FP16" in recipe.set_flags:
            cmd.append("--fp16")
    elif recipe.generation == "10":
        cmd.append("--stronglyTyped")
    if "TF32" in recipe.clear_flags:
        cmd.append("--noTF32")
    if config.workspace_mib is not None:
        cmd.append(f"--workspace={config.workspace_mib}" if recipe.generation == "8.6"
                   else f"--memPoolSize=workspace:{config.workspace_mib}")
    if config.timing_cache:
        cmd.append(f"--timingCacheFile={config.timing_cache}")
    if config.dla_core is not None:
        cmd += [f"--useDLACore={config.dla_core}", "--allowGPUFallback"]
    return cmd


def format_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
