"""A Triton Inference Server model repository: one model per artifact, each with its
``config.pbtxt`` (platform, max_batch_size, tensors, dynamic batching)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import _io

__all__ = ["TritonModel", "config_pbtxt", "write_repository"]

_PLATFORM = {".onnx": ("onnxruntime_onnx", "model.onnx"), ".plan": ("tensorrt_plan", "model.plan")}


@dataclass(frozen=True)
class TritonModel:
    name: str
    artifact: Path
    input_name: str
    input_dims: tuple[int, ...]  # without the batch dimension
    output_name: str
    num_classes: int
    max_batch_size: int
    preferred_batches: tuple[int, ...]


def config_pbtxt(m: TritonModel) -> str:
    platform, _ = _PLATFORM[m.artifact.suffix]
    dims = ", ".join(str(d) for d in m.input_dims)
    preferred = ", ".join(str(b) for b in m.preferred_batches)
    return (
        f'name: "{m.name}"\n'
        f'platform: "{platform}"\n'
        f"max_batch_size: {m.max_batch_size}\n"
        f'input [\n  {{\n    name: "{m.input_name}"\n    data_type: TYPE_FP32\n    dims: [ {dims} ]\n  }}\n]\n'
        f'output [\n  {{\n    name: "{m.output_name}"\n    data_type: TYPE_FP32\n    dims: [ {m.num_classes} ]\n  }}\n]\n'
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n}}\n"
    )


def write_repository(repo: Path, models: list[TritonModel]) -> list[Path]:
    """Write (or refresh) one folder per model; returns the files written."""
    written = []
    for m in models:
        _, filename = _PLATFORM[m.artifact.suffix]
        version = repo / m.name / "1"
        version.mkdir(parents=True, exist_ok=True)
        _io.copy_file(m.artifact, version / filename)
        cfg = repo / m.name / "config.pbtxt"
        _io.write_text(cfg, config_pbtxt(m))
        written += [version / filename, cfg]
    return written
