"""Engine stage: TensorRT and TensorRT-RTX engines from FP32, FP16 or INT8 (Q/DQ) ONNX, per
builder family and release, and the equivalent trtexec / tensorrt_rtx commands (which need
neither here)."""

from .builder import (
    BuildResult,
    OnnxInfo,
    build_engine,
    check_onnx,
    create_config,
    engine_bytes,
    inspect_onnx,
    network_from_onnx,
    resolve_builder,
)
from .onnx_check import check_readable, first_unreadable_node
from .recipe import (
    FAMILIES,
    BuildConfig,
    Family,
    Recipe,
    TrtVersion,
    choose_recipe,
    family,
    format_command,
    parse_version,
    profile_shapes,
    trtexec_command,
)
from .record import builder_family, check_compatible, load_record, record_path, same_trt_release
from .trtexec import GENERATIONS, TrtexecLine, trtexec_line, trtexec_script

__all__ = [
    "FAMILIES",
    "GENERATIONS",
    "BuildConfig",
    "BuildResult",
    "Family",
    "OnnxInfo",
    "Recipe",
    "TrtVersion",
    "TrtexecLine",
    "build_engine",
    "builder_family",
    "check_compatible",
    "check_onnx",
    "check_readable",
    "choose_recipe",
    "create_config",
    "engine_bytes",
    "family",
    "first_unreadable_node",
    "format_command",
    "inspect_onnx",
    "load_record",
    "network_from_onnx",
    "parse_version",
    "profile_shapes",
    "record_path",
    "resolve_builder",
    "same_trt_release",
    "trtexec_command",
    "trtexec_line",
    "trtexec_script",
]
