"""The portability check made before a plan is loaded (pure logic; no TensorRT needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resdeploy.engine.record import check_compatible, load_record, record_path, same_trt_release
from resdeploy.errors import UsageError

RECORD = {"tensorrt_version": "10.3.0.30", "compute_capability": [8, 7], "gpu": "Orin"}


def test_same_release_needs_all_four_fields() -> None:
    # "expecting library version 8.6.1.2 got 8.6.0.12": the build field is part of the release.
    assert same_trt_release("10.3.0.30", "10.3.0.30")
    assert not same_trt_release("10.3.0.30", "10.3.0.26")
    assert not same_trt_release("8.6.1.2", "8.6.0.12")
    assert not same_trt_release("10.3.0.30", "10.4.0.30")


def test_matching_plan_is_accepted() -> None:
    check_compatible("m.plan", RECORD, "10.3.0.30", (8, 7))


def test_other_build_of_the_same_release_is_refused() -> None:
    with pytest.raises(UsageError, match=r"TensorRT 10\.3\.0\.30 but TensorRT 10\.3\.0\.26 .*exact release"):
        check_compatible("m.plan", RECORD, "10.3.0.26", (8, 7))


def test_other_tensorrt_is_refused() -> None:
    with pytest.raises(UsageError, match=r"TensorRT 10\.3\.0\.30 but TensorRT 8\.6\.2 .*rebuild"):
        check_compatible("m.plan", RECORD, "8.6.2", (8, 7))


def test_other_gpu_is_refused() -> None:
    with pytest.raises(UsageError, match=r"compute capability 8\.7 \(Orin\) but this GPU is 8\.6"):
        check_compatible("m.plan", RECORD, "10.3.0.30", (8, 6))


def test_record_sits_beside_the_plan(tmp_path: Path) -> None:
    plan = tmp_path / "r50.plan"
    assert record_path(plan) == tmp_path / "r50.plan.json"
    assert load_record(plan) is None
    record_path(plan).write_text(json.dumps(RECORD))
    assert load_record(plan) == RECORD
    record_path(plan).write_text("{not json")
    with pytest.raises(UsageError, match="unreadable"):
        load_record(plan)
