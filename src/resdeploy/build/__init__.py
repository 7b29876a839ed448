"""Build stage: TensorRT engines from FP32, FP16 or INT8 (Q/DQ) ONNX, per TensorRT generation."""

from .record import check_compatible, load_record, record_path

__all__ = ["check_compatible", "load_record", "record_path"]
