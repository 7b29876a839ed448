"""Build stage: TensorRT engines from FP32, FP16 or INT8 (Q/DQ) ONNX, per TensorRT generation."""

from .engine import BuildResult, build_engine, inspect_onnx
from .recipe import BuildConfig, Recipe, choose_recipe, format_command, generation, profile_shapes, trtexec_command
from .record import check_compatible, load_record, record_path

__all__ = [
    "BuildConfig",
    "BuildResult",
    "Recipe",
    "build_engine",
    "check_compatible",
    "choose_recipe",
    "format_command",
    "generation",
    "inspect_onnx",
    "load_record",
    "profile_shapes",
    "record_path",
    "trtexec_command",
]
