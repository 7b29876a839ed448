"""The JSON record beside every TensorRT plan, and the portability check made before loading.

An engine is tied to the TensorRT version that built it and to the GPU's compute capability
(TensorRT developer guide, "Engine compatibility"); loading it elsewhere fails deep inside
TensorRT or, worse, works with a warning. The record makes the refusal early and clear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["check_compatible", "load_record", "record_path", "same_trt_release"]

RECORD_SCHEMA = 1


def record_path(plan: str | Path) -> Path:
    p = Path(plan)
    return p.with_name(p.name + ".json")


def load_record(plan: str | Path) -> dict[str, Any] | None:
    path = record_path(plan)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); rebuild the plan with `resdeploy build`") from None
    return data if isinstance(data, dict) else None


def same_trt_release(a: str, b: str) -> bool:
    """Engines need the same major.minor.patch (the fourth, build, field may differ)."""
    return a.split(".")[:3] == b.split(".")[:3]


def check_compatible(plan: str | Path, record: dict[str, Any], trt_version: str, capability: tuple[int, int]) -> None:
    """Raise a one-line :class:`UsageError` when ``plan`` was built for another TensorRT or GPU."""
    built_trt = str(record.get("tensorrt_version", ""))
    if built_trt and not same_trt_release(built_trt, trt_version):
        raise UsageError(
            f"{plan} was built with TensorRT {built_trt} but TensorRT {trt_version} is installed; "
            "rebuild it here with `resdeploy build`"
        )
    built_cc = record.get("compute_capability")
    if built_cc and tuple(built_cc) != tuple(capability):
        raise UsageError(
            f"{plan} was built for compute capability {built_cc[0]}.{built_cc[1]} "
            f"({record.get('gpu', 'another GPU')}) but this GPU is {capability[0]}.{capability[1]}; "
            "rebuild it on this GPU with `resdeploy build`"
        )
