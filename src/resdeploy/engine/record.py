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
from .recipe import family as builder_row

__all__ = ["RECORD_SCHEMA", "builder_family", "check_compatible", "load_record", "record_path", "same_trt_release"]

RECORD_SCHEMA = 3  # 3: "builder" (family, version) and "compute_capabilities_targeted"


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


def builder_family(record: dict[str, Any] | None) -> str:
    """``tensorrt`` or ``tensorrt-rtx``: which builder made the engine (records before schema 3: TensorRT)."""
    builder = (record or {}).get("builder")
    return str(builder.get("family", "tensorrt")) if isinstance(builder, dict) else "tensorrt"


def _targets_fit(record: dict[str, Any], capability: tuple[int, int]) -> bool:
    """An engine built for named compute capabilities runs only on those ("current": the build GPU's)."""
    targets = record.get("compute_capabilities_targeted")
    if not isinstance(targets, list):
        return True  # TensorRT-RTX's default portable set: the backend checks the GPU is in it
    here = f"{capability[0]}.{capability[1]}"
    built_cc = record.get("compute_capability")
    return here in targets or ("current" in targets and isinstance(built_cc, list) and tuple(built_cc) == tuple(capability))


def check_compatible(plan: str | Path, record: dict[str, Any], trt_version: str, capability: tuple[int, int],
                     builder: str = "tensorrt") -> None:
    """Raise a one-line :class:`UsageError` when ``plan`` was built by another builder family,
    another release of it, or for another GPU."""
    family = builder_family(record)
    label = builder_row(builder).label
    if family != builder:
        raise UsageError(f"{plan} was built by {family}, not {builder}; run it with --backend {family}")
    built_trt = str((record.get("builder") or {}).get("version") or record.get("tensorrt_version", ""))
    if built_trt and not same_trt_release(built_trt, trt_version):
        raise UsageError(
            f"{plan} was built with {label} {built_trt} but {label} {trt_version} is installed (engines need "
            "the exact release); rebuild it here with `resdeploy build` or `sh trtexec.sh`"
        )
    if builder == "tensorrt-rtx":
        if not _targets_fit(record, capability):
            raise UsageError(f"{plan} was built for compute capabilities {record['compute_capabilities_targeted']} "
                             f"but this GPU is {capability[0]}.{capability[1]}; rebuild it with "
                             f"`resdeploy build --runtime tensorrt-rtx --compute-capability {capability[0]}.{capability[1]}`")
        return
    built_cc = record.get("compute_capability")
    if built_cc and tuple(built_cc) != tuple(capability):
        raise UsageError(
            f"{plan} was built for compute capability {built_cc[0]}.{built_cc[1]} "
            f"({record.get('gpu', 'another GPU')}) but this GPU is {capability[0]}.{capability[1]}; "
            "rebuild it on this GPU with `resdeploy build`"
        )
