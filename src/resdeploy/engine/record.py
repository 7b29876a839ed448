"""The JSON record beside every TensorRT plan, and the portability check made before loading.

An engine is tied to the exact TensorRT release that built it, all four version fields (users
report "expecting library version 8.6.1.2 got 8.6.0.12" when only the build field differs), and
to the GPU's compute capability (TensorRT developer guide, "Engine compatibility"); loading it
elsewhere fails deep inside TensorRT. The record makes the refusal early and clear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["RECORD_SCHEMA", "check_compatible", "load_record", "record_path", "same_trt_release"]

RECORD_SCHEMA = 2


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
        raise UsageError(f"{path} is unreadable ({exc}); rebuild the plan with `resdeploy build`") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a plan record; rebuild the plan with `resdeploy build`")
    return data


def _fields(version: str) -> tuple[int, ...]:
    out = []
    for part in version.strip().split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def same_trt_release(a: str, b: str) -> bool:
    """Every version field both strings give must match: ``8.6.1.6`` != ``8.6.1.5``."""
    fa, fb = _fields(a), _fields(b)
    n = min(len(fa), len(fb))
    return n > 0 and fa[:n] == fb[:n]


def check_compatible(plan: str | Path, record: dict[str, Any], trt_version: str, capability: tuple[int, int]) -> None:
    """Raise a one-line :class:`UsageError` when ``plan`` was built for another TensorRT or GPU."""
    built_trt = str(record.get("tensorrt_version", ""))
    if built_trt and not same_trt_release(built_trt, trt_version):
        raise UsageError(
            f"{plan} was built with TensorRT {built_trt} but TensorRT {trt_version} is installed (engines need "
            "the exact release); rebuild it here with `resdeploy build` or `sh trtexec.sh`"
        )
    built_cc = record.get("compute_capability")
    if built_cc and tuple(built_cc) != tuple(capability):
        raise UsageError(
            f"{plan} was built for compute capability {built_cc[0]}.{built_cc[1]} "
            f"({record.get('gpu', 'another GPU')}) but this GPU is {capability[0]}.{capability[1]}; "
            "rebuild it on this GPU with `resdeploy build`"
        )
