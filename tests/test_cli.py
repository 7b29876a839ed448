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


def test_a_torch_built_against_numpy_1_is_explained(run_cli, monkeypatch, tmp_path) -> None:
    """NVIDIA's JetPack 6 torch wheels were built against NumPy 1.x; with NumPy 2 installed,
    torch.from_numpy raises this RuntimeError. The CLI names torch, the NumPy installed and the fix."""
    import resdeploy.errors
    import resdeploy.models

    def broken(*_args, **_kwargs):
        raise RuntimeError("Numpy is not available")

    monkeypatch.setattr(resdeploy.models, "load_model", broken)
    monkeypatch.setattr(resdeploy.errors, "_numpy_version", lambda: "2.2.6")  # .venv-oldest has 1.26
    r = run_cli("export", "resnet18", "-o", tmp_path / "m.onnx")
    assert r.code == 2, r.err
    assert r.err.startswith("error: torch ") and r.err.count("\n") == 1
    assert "NumPy 1.x" in r.err and "NumPy 2.2.6" in r.err
    assert ("pip install 'numpy<2'" if sys.version_info < (3, 13) else "pip install --upgrade torch") in r.err
    assert not (tmp_path / "m.onnx").exists()


def test_a_reader_that_left_is_a_quiet_exit(zoo_onnx, tmp_path, monkeypatch, capsys) -> None:
    """`resdeploy build ... --print-trtexec | head -1`: no 'unexpected BrokenPipeError', exit 141 as cat does."""
    import io

    from resdeploy import cli

    class ClosedPipe(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = cli.main(["build", str(zoo_onnx), "-o", str(tmp_path / "m.plan"), "--runtime", "tensorrt",
                     "--print-trtexec", "--trt-version", "10.3"])
    assert code == 141 and capsys.readouterr().err == ""
    assert not (tmp_path / "m.plan").exists()
