"""Export stage: a torch ResNet becomes a verified, BN-folded, simplified ONNX."""

from ._fold import fold_bn_module, fold_bn_onnx
from ._foreign import AdoptResult, adopt_fp32
from ._verify import FP32_RELATIVE_TOLERANCE, Check, compare
from .onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportConfig,
    ExportResult,
    FoldResult,
    export_onnx,
    fold_bn_file,
)

__all__ = [
    "FP32_RELATIVE_TOLERANCE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "AdoptResult",
    "Check",
    "ExportConfig",
    "ExportResult",
    "FoldResult",
    "adopt_fp32",
    "compare",
    "export_onnx",
    "fold_bn_file",
    "fold_bn_module",
    "fold_bn_onnx",
]
