"""Quantize stage: FP16, and INT8 Q/DQ ONNX for TensorRT or ONNX Runtime CPU, with an accuracy budget."""

from ._calib import AUTO as _AUTO
from ._calib import METHODS as _METHODS
from ._qdq import FP16_BLOCK_LIST, Unit, find_units, to_fp16, write_qdq
from .quantize import PRECISIONS, TARGETS, QuantizeConfig, QuantizeReport, quantize, report_path

CALIB_METHODS = (_AUTO, *_METHODS)  # what --calib-method takes; auto (the default) chooses among the rest

__all__ = [
    "CALIB_METHODS",
    "FP16_BLOCK_LIST",
    "PRECISIONS",
    "TARGETS",
    "QuantizeConfig",
    "QuantizeReport",
    "Unit",
    "find_units",
    "quantize",
    "report_path",
    "to_fp16",
    "write_qdq",
]
