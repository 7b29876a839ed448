"""Reliability of `resdeploy run`: an interrupted or killed run loses nothing and resumes, two
runs never share an OUTDIR, a corrupted artifact or stage record is rebuilt, bad outputs and
bad settings are exit 2 with nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from resdeploy import cli
from resdeploy._io import FileLock

from ..conftest import assert_clean_error

SMALL = ("--precisions", "fp32,int8", "--targets", "cpu", "--val-limit", "200", "--calib-size", "64", "--batch", "1",
         "--iters", "3", "--warmup", "0", "--max-seconds", "2")


def _stages(out: Path) -> dict:
    try:
        return json.loads((out / ".resdeploy-stages.json").read_text())
    except (OSError, ValueError):
        return {}


def _default_sigint() -> None:
    # A job started in the background by a non-interactive shell (CI runners, `nohup ... &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: give the
    # child the disposition a terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "resdeploy", "run", *SMALL, "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _stop_after_export(proc: subprocess.Popen, out: Path, sig: int) -> tuple[int, str]:
    deadline = time.time() + 300
    while "export" not in _stages(out):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _artifacts_load(out: Path) -> None:
    for p in out.glob("*.onnx"):
        onnx.load(str(p))  # nothing half-written under an artifact's name


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path, sig: int, code: int) -> None:
    out = tmp_path / "out"
    rc, err = _stop_after_export(_start(out), out, sig)
    assert rc == code, err
    if sig == signal.SIGINT:
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert lines == ["error: interrupted; rerun the same command to resume (finished stages are kept)"], err
        assert "Traceback" not in err
    _artifacts_load(out)
    assert cli.main(["run", *SMALL, "-o", str(out)]) == 0
    stages = {s["name"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    assert stages["export"]["reused"], "the finished export is kept"
    assert not stages["eval"]["reused"]
    assert not list(out.rglob(".*.tmp")), "temporary files of the killed run are cleaned"


def test_two_runs_never_share_an_outdir(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / ".resdeploy-lock", what="test"):
        r = run_cli("run", *SMALL, "-o", out)
    assert_clean_error(r, 2, "in use by another resdeploy process", f"pid {os.getpid()}")
    # A lock file left by a killed run (its holder gone, so no flock) is taken over.
    (out / ".resdeploy-lock").write_text("999999")
    assert run_cli("run", *SMALL, "-o", out).code == 0


def test_corrupted_artifacts_and_records_are_rebuilt(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    assert run_cli("run", *SMALL, "-o", out).code == 0
    int8 = next(out.glob("*-int8-cpu.onnx"))
    good = int8.read_bytes()
    int8.write_bytes(good[: len(good) // 3])  # truncated by hand
    assert run_cli("run", *SMALL, "-o", out).code == 0
    stages = {s["name"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    assert not stages["quantize:int8-cpu"]["reused"] and stages["export"]["reused"]
    assert int8.read_bytes() == good, "rebuilt byte for byte"
    (out / ".resdeploy-stages.json").write_text("{not json")
    assert run_cli("run", *SMALL, "-o", out).code == 0
    stages = {s["name"]: s for s in json.loads((out / "report.json").read_text())["stages"]}
    assert not any(s.get("reused") for s in stages.values())


def test_bad_outputs_are_exit_2(tmp_path: Path, zoo_onnx: Path, run_cli) -> None:
    (tmp_path / "afile").write_text("x")
    assert_clean_error(run_cli("run", *SMALL, "-o", tmp_path / "afile"), 2, "is a file")
    (tmp_path / "adir.onnx").mkdir()
    assert_clean_error(run_cli("quantize", zoo_onnx, "-o", tmp_path / "adir.onnx", "--precision", "fp16"), 2,
                       "is a directory")
    assert_clean_error(run_cli("quantize", zoo_onnx, "-o", tmp_path / "afile" / "x.onnx", "--precision", "fp16"), 2,
                       "is a file")


def test_a_full_disk_is_exit_2_with_nothing_half_written(tmp_path: Path, zoo_onnx: Path, run_cli, monkeypatch) -> None:
    import resdeploy._io as io

    real_fsync = io.os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", zoo_onnx, "-o", out, "--precision", "fp16")
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    assert_clean_error(r, 2, "no space left", str(out))
    assert list(tmp_path.iterdir()) == [], "no output and no temporary file"


def test_toml_values_of_the_wrong_type_name_their_key(tmp_path: Path, run_cli) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('batch = "1,abc"\n')
    assert_clean_error(run_cli("run", cfg, "-o", tmp_path / "o"), 2, "batch must be a list of int")
    cfg.write_text('trust-pickle = "yes"\n')
    assert_clean_error(run_cli("run", cfg, "-o", tmp_path / "o"), 2, "trust-pickle must be bool")
    cfg.write_text("batch = [1, 8]\ntrust-pickle = false\n")
    from resdeploy.pipeline import load_config

    assert load_config(cfg) == {"batches": (1, 8), "trust_pickle": False}
