"""The machine a figure was measured on: CPU, cores, library versions, GPUs and, on a Jetson, its
conditions. Report, bundle, verify and the CLI's bench all record it."""

from __future__ import annotations

import os
import platform
from typing import Any

from ..runtime._cuda import gpu_info
from ..runtime.jetson import conditions

__all__ = ["environment"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None, isolation: str) -> dict[str, Any]:
    """The machine, library versions and, on a Jetson, its bench conditions; ``warnings`` lists
    what makes the figures wander (clocks not locked)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("resdeploy", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "torchvision", "tensorrt",
                "tensorrt-rtx", "openvino"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count() or 0,
        "threads": threads or os.cpu_count() or 0,
        "platform": platform.platform(),
        "versions": versions,
        "isolation": isolation,
        "warnings": [],
    }
    gpus = gpu_info()
    if gpus:
        env["gpus"] = gpus
    jetson = conditions()
    if jetson is not None:
        env["jetson"] = jetson
        env["warnings"] += jetson["warnings"]
    return env
