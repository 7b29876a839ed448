"""Engine stage: TensorRT engines from FP32, FP16 or INT8 (Q/DQ) ONNX, per TensorRT release,
and the equivalent trtexec commands (which need no TensorRT here)."""

from .builder import BuildResult, OnnxInfo, build_engine, create_config, engine_bytes, inspect_onnx, network_from_onnx
from .recipe import (
    BuildConfig,
    Recipe,
    TrtVersion,
    choose_recipe,
    format_command,
    parse_version,
    profile_shapes,
    trtexec_command,
)
from .record import check_compatible, load_record, record_path, same_trt_release
from .trtexec import GENERATIONS, TrtexecLine, trtexec_line, trtexec_script

__all__ = [
    "GENERATIONS",
    "BuildConfig",
    "BuildResult",
    "OnnxInfo",
    "Recipe",
    "TrtVersion",
    "TrtexecLine",
    "build_engine",
    "check_compatible",
    "choose_recipe",
    "create_config",
    "engine_bytes",
    "format_command",
    "inspect_onnx",
    "load_record",
    "network_from_onnx",
    "parse_version",
    "profile_shapes",
    "record_path",
    "same_trt_release",
    "trtexec_command",
    "trtexec_line",
    "trtexec_script",
]
