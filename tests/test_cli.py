"""The package imports light and the CLI works without TensorRT or a GPU."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_heavy_dependency() -> None:
    code = "import sys, resdeploy, resdeploy.cli; print(sorted(m for m in ('torch','onnxruntime','tensorrt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_help_works_without_tensorrt() -> None:
    r = subprocess.run([sys.executable, "-m", "resdeploy", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for command in ("export", "fold-bn"):
        assert command in r.stdout


def test_usage_error_is_one_line(run_cli) -> None:
    r = run_cli("export", "resnet18")  # missing -o
    assert r.code == 2
    assert r.err.count("\n") == 1 and r.err.startswith("error: ")
