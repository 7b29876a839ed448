"""Fixtures of the engine tests that run NVIDIA's own TensorRT-RTX parser and builder (which
build ahead of time on a CPU-only machine): the demo's variants and a ResNet-50 at 224 px, each
made and built once per session."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest

from resdeploy._tensorrt import import_builder

# NVIDIA publishes TensorRT-RTX wheels for Linux and Windows x86_64 only (no aarch64).
RTX_WHEELS = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="session")
def rtx() -> Any:
    """The real ``tensorrt_rtx`` module: skipped only where no wheel can exist, an error elsewhere."""
    if not RTX_WHEELS:
        pytest.skip(f"TensorRT-RTX publishes no wheel for {platform.machine()} (x86_64 only)")
    trt = import_builder("tensorrt_rtx")
    if trt is None:
        pytest.fail("tensorrt_rtx is not importable: `make setup` installs the rtx extra on x86_64 "
                    "(pip install -e '.[rtx]')")
    return trt


def _variants(fp32: Path, folder: Path, calib: str, calib_size: int, with_cpu: bool) -> dict[str, Path]:
    from resdeploy.quantize import QuantizeConfig, quantize

    paths = {"fp32": fp32, "fp16": folder / "fp16.onnx", "int8-tensorrt": folder / "int8-tensorrt.onnx"}
    quantize(fp32, paths["fp16"], QuantizeConfig(precision="fp16"))
    quantize(fp32, paths["int8-tensorrt"], QuantizeConfig(precision="int8", calib=calib, calib_size=calib_size))
    if with_cpu:
        paths["int8-cpu"] = folder / "int8-cpu.onnx"
        quantize(fp32, paths["int8-cpu"], QuantizeConfig(precision="int8", target="cpu", calib=calib,
                                                         calib_size=calib_size))
    return paths


@pytest.fixture(scope="session")
def demo_variants(zoo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every variant `resdeploy run` makes of the demo model (FP32, FP16, INT8 tensorrt and cpu profiles)."""
    return _variants(zoo_onnx, tmp_path_factory.mktemp("demo-variants"), "fashion-mnist:train", 64, True)


@pytest.fixture(scope="session")
def resnet50_engines(rtx: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """torchvision's ResNet-50 (random weights) at 224 px: its FP32, FP16 and INT8 tensorrt-profile
    ONNX, each built once by TensorRT-RTX's builder. variant -> BuildResult."""
    from resdeploy.engine import BuildConfig, build_engine
    from resdeploy.export import export_onnx
    from resdeploy.models import ModelSpec, load_model

    folder = tmp_path_factory.mktemp("r50")
    fp32 = folder / "r50-fp32.onnx"
    export_onnx(load_model(ModelSpec("resnet50", input_size=224)), fp32)
    onnx = _variants(fp32, folder, "fashion-mnist:train", 8, False)
    config = BuildConfig(min_batch=1, opt_batch=1, max_batch=4)
    return {name: build_engine(path, path.with_suffix(".engine"), config, runtime="tensorrt-rtx")
            for name, path in onnx.items()}
