"""A runtime that cannot import with the installed NumPy (built against NumPy 1.x: onnxruntime before
1.19, NVIDIA's Jetson torch, matplotlib before 3.8.4) is one ``error:`` line naming the package, the
NumPy installed and the pip command that fixes it, exit 2; an ImportError with no message is never
"unexpected". The failing import is a stand-in written here: the banner NumPy 2 prints (one write
with the importing stack), the line Python then prints in pieces, and the ImportError without a
message that onnxruntime 1.17 raises, as seen with NumPy 2.2.6."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resdeploy import errors

from .conftest import assert_clean_error

ROOT = Path(__file__).resolve().parents[1]
FIX = "pip install 'numpy<2'" if sys.version_info < (3, 13) else "pip install --upgrade onnxruntime"

# What NumPy 2.2.6 and pybind11 write to sys.stderr when onnxruntime 1.17's extension loads.
_BANNER_THEN_FAIL = '''
import sys, traceback
sys.stderr.write("\\nA module that was compiled using NumPy 1.x cannot be run in\\nNumPy 2.2.6 as it may crash. "
                 "To support both 1.x and 2.x\\nversions of NumPy, modules must be compiled with NumPy 2.0.\\n\\n"
                 "Traceback (most recent call last):" + "".join(traceback.format_stack()))
for piece in ("AttributeError", ": ", "_ARRAY_API not found", "\\n"):
    sys.stderr.write(piece)
raise ImportError
'''


def _fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, body: str) -> None:
    """MODULE, when next imported, runs BODY instead (the real one, if imported already, comes back after)."""
    pkg = tmp_path / "fake" / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(errors, "_numpy_version", lambda: "2.2.6")


@pytest.fixture
def ort_built_for_numpy_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, monkeypatch, "onnxruntime", _BANNER_THEN_FAIL)


def _assert_numpy_line(r, package: str = "onnxruntime") -> None:
    assert_clean_error(r, 2, package, "NumPy 1.x", "NumPy 2.2.6", FIX)
    assert "unexpected" not in r.err and "_ARRAY_API" not in r.err and "compiled using" not in r.err


@pytest.mark.slow
def test_export_names_onnxruntime_and_the_fix(run_cli, ort_built_for_numpy_1, tmp_path) -> None:
    """The issue's command: onnxsim imports onnxruntime. Before, 'error: unexpected ImportError: ' (exit 1),
    after NumPy's banner and onnxsim running `pip install onnxruntime` by itself."""
    r = run_cli("export", "resnet18", "--num-classes", "10", "--input-size", "32", "-o", tmp_path / "m.onnx")
    _assert_numpy_line(r)
    assert "Installing onnxruntime" not in r.out  # resdeploy imports it before onnxsim could try pip
    assert not (tmp_path / "m.onnx").exists()


def test_quantize_names_onnxruntime_and_the_fix(run_cli, zoo_onnx, ort_built_for_numpy_1, tmp_path) -> None:
    r = run_cli("quantize", zoo_onnx, "--precision", "int8", "--calib", "fashion-mnist:train", "--calib-size", "16",
                "-o", tmp_path / "q.onnx")
    _assert_numpy_line(r)
    assert not (tmp_path / "q.onnx").exists()


def test_eval_names_onnxruntime_not_a_missing_install(run_cli, zoo_onnx, ort_built_for_numpy_1) -> None:
    r = run_cli("eval", zoo_onnx, "--data", "fashion-mnist:test", "--limit", "20", "--backend", "ort-cpu")
    _assert_numpy_line(r)
    assert "not installed" not in r.err


def test_debug_shows_what_numpy_printed(ort_built_for_numpy_1, zoo_onnx, tmp_path, capsys) -> None:
    from resdeploy import cli

    with pytest.raises(ImportError):
        cli.main(["--debug", "quantize", str(zoo_onnx), "--precision", "int8", "--calib", "fashion-mnist:train",
                  "--calib-size", "16", "-o", str(tmp_path / "q.onnx")])
    err = capsys.readouterr().err
    assert "compiled using NumPy 1.x" in err and "_ARRAY_API not found" in err


def test_an_import_error_without_a_message_is_never_unexpected(run_cli, zoo_onnx, tmp_path, monkeypatch) -> None:
    """No NumPy banner: a broken install. The package and a reinstall, exit 2."""
    _fake(tmp_path, monkeypatch, "onnxruntime", "raise ImportError\n")
    r = run_cli("quantize", zoo_onnx, "--precision", "int8", "--calib", "fashion-mnist:train", "--calib-size", "16",
                "-o", tmp_path / "q.onnx")
    assert_clean_error(r, 2, "onnxruntime", "without a message", "pip install --force-reinstall 'onnxruntime==")
    assert "unexpected" not in r.err


def test_a_module_that_says_numpy_failed_to_import(tmp_path, monkeypatch) -> None:
    """matplotlib 3.7 with NumPy 2: the banner, then ImportError('numpy.core.multiarray failed to import')."""
    _fake(tmp_path, monkeypatch, "plotlib", _BANNER_THEN_FAIL.replace(
        "raise ImportError", "raise ImportError('numpy.core.multiarray failed to import')"))
    with errors.numpy_abi_guard():
        try:
            import plotlib  # type: ignore[import-not-found]  # noqa: F401
        except ImportError as exc:
            known = errors.environment_error(exc)
    assert known is not None and known.exit_code == 2
    assert str(known).startswith("plotlib was built against NumPy 1.x") and "NumPy 2.2.6" in str(known)


def test_the_bench_worker_sends_the_same_line(tmp_path, monkeypatch, capsys) -> None:
    """Errors cross from the isolated bench worker as payloads: this one is not 'unexpected' there either."""
    _fake(tmp_path, monkeypatch, "onnxruntime", _BANNER_THEN_FAIL)
    with errors.numpy_abi_guard():
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            payload = errors.to_payload(exc)
    assert payload["exit_code"] == 2 and payload["type"] == "UsageError"
    assert "onnxruntime" in str(payload["message"]) and FIX in str(payload["message"])
    assert isinstance(errors.from_payload(payload), errors.UsageError)
    assert capsys.readouterr().err == ""


def test_the_guard_lets_everything_else_through(capsys) -> None:
    with errors.numpy_abi_guard():
        sys.stderr.write("progress 1/2\n")
        sys.stderr.write("\nA module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.2.6 ...\n")
        sys.stderr.write("a warning that is not NumPy's\n")
        sys.stderr.write("partial")
    assert capsys.readouterr().err == "progress 1/2\na warning that is not NumPy's\npartial"
    with errors.numpy_abi_guard(show=True):
        sys.stderr.write("\nA module that was compiled using NumPy 1.x cannot be run in\n")
    assert "compiled using NumPy 1.x" in capsys.readouterr().err


def test_torch_numpy_is_not_available_names_torch(monkeypatch) -> None:
    """NVIDIA's JetPack 6 torch with NumPy 2: torch.from_numpy raises this; no banner names it."""
    monkeypatch.setattr(errors, "_numpy_version", lambda: "2.2.6")
    with errors.numpy_abi_guard():
        known = errors.environment_error(RuntimeError("Numpy is not available"))
    assert known is not None and str(known).startswith("torch ")
    assert "NumPy 2.2.6" in str(known) and ("pip install 'numpy<2'" if sys.version_info < (3, 13) else "torch") in str(known)


def test_unpinned_floors_leave_numpy_to_pip() -> None:
    """`make test-resolved` installs every floor but NumPy's."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "oldest_constraints.py"), "--unpin", "numpy", "openvino"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert not [line for line in out if line.startswith("numpy")]
    assert "onnxruntime==1.19" in out and "torch==2.3" in out and "openvino==2024.0" in out


def test_a_banner_seen_earlier_explains_no_other_import_error(tmp_path, monkeypatch) -> None:
    """torch.onnx swallows onnxruntime's failure at `import torchvision`; a later missing module is just that."""
    _fake(tmp_path, monkeypatch, "onnxruntime", _BANNER_THEN_FAIL)
    with errors.numpy_abi_guard():
        with pytest.raises(ImportError):
            import onnxruntime  # noqa: F401
        with pytest.raises(ImportError) as missing:
            import resdeploy_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert errors.environment_error(missing.value) is None
