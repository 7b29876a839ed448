"""NVIDIA's TensorRT-RTX parser and builder read resdeploy's TensorRT-targeted ONNX of a grey
(1-channel) model and of a rectangular (64 x 48) one; the profile, the record and the trtexec
line follow the model's own C x H x W."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resdeploy.engine import BuildConfig, build_engine
from resdeploy.export import export_onnx
from resdeploy.models import LoadedModel, ModelSpec
from resdeploy.preprocess import Preprocess
from resdeploy.quantize import QuantizeConfig, quantize

from ..test_channels import tiny_resnet


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, (64, 48))])
def test_nvidia_builds_grey_and_rectangular_int8(rtx: Any, tmp_path: Path, run_cli, channels: int, size: Any) -> None:
    pre = Preprocess(input_size=size, mean=(0.286,), std=(0.353,), channels=channels)
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(LoadedModel(tiny_resnet(channels), pre, 10, ModelSpec("tiny")), fp32)
    int8 = tmp_path / "int8.onnx"
    quantize(fp32, int8, QuantizeConfig(precision="int8", calib="fashion-mnist:train", calib_size=16))
    chw = list(pre.input_shape)
    result = build_engine(int8, tmp_path / "int8.engine", BuildConfig(min_batch=1, opt_batch=2, max_batch=4),
                          runtime="tensorrt-rtx")
    assert result.plan.stat().st_size > 0
    assert result.record["profile"]["input"] == {"min": [1, *chw], "opt": [2, *chw], "max": [4, *chw]}
    assert json.loads(result.record["onnx_metadata"]["resdeploy.input_size"]) == chw
    r = run_cli("build", int8, "-o", tmp_path / "m.engine", "--runtime", "tensorrt-rtx", "--print-trtexec")
    dims = "x".join(map(str, chw))
    assert r.code == 0 and f"--minShapes=input:1x{dims}" in r.out and f"--maxShapes=input:32x{dims}" in r.out
