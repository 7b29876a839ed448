"""The one session interface: declared once per backend, feeds checked before any runtime
sees them, names from the artifact, errors that cross the bench worker keep their class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resdeploy.errors import BackendUnavailableError, UsageError
from resdeploy.measure import BenchConfig, benchmark_isolated
from resdeploy.runtime import Artifact, get_backend, open_session


def test_sessions_check_names_dtype_and_rank(zoo_onnx: Path) -> None:
    for art, backend in ((Artifact.resolve(str(zoo_onnx)), "ort-cpu"), (Artifact.resolve("zoo:fashion-resnet18"), "torch")):
        with open_session(art, backend) as s:
            assert s.backend == backend and s.input_name == "input" and s.output_names == ["logits"]
            ok = np.zeros((2, 3, 32, 32), np.float32)
            assert s.infer({"input": ok})["logits"].shape == (2, 10)
            with pytest.raises(UsageError, match=r"takes inputs \['input'\], got \['x'\]"):
                s.infer({"x": ok})
            with pytest.raises(UsageError, match="must be float32, got float64"):
                s.infer({"input": ok.astype(np.float64)})
            with pytest.raises(UsageError, match="rank 4"):
                s.infer({"input": ok[0]})
            with pytest.raises(UsageError, match=r"takes \(N, 3, 32, 32\)"):
                s.infer({"input": np.zeros((2, 3, 64, 64), np.float32)})


def test_torch_cuda_sessions_report_their_own_name(monkeypatch) -> None:
    backend = get_backend("torch-cuda")
    monkeypatch.setattr(type(backend), "device", "cpu")  # no GPU here: the naming logic only
    with backend.prepare(Artifact.resolve("zoo:fashion-resnet18"), __import__("resdeploy.runtime").runtime.BackendOptions()) as s:
        assert s.backend == "torch-cuda"


def test_bench_worker_errors_keep_their_class(zoo_onnx: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        benchmark_isolated(str(zoo_onnx), "ort-cuda", BenchConfig(batches=(1,), iters=1, warmup=0))


def test_bench_worker_runs_only_as_main() -> None:
    code = "import resdeploy.measure._bench_worker; print('imported')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "imported"


def test_bench_worker_answers_json(zoo_onnx: Path) -> None:
    req = {"artifact": str(zoo_onnx), "backend": "nope", "config": {"batches": [1], "iters": 1, "warmup": 0},
           "model_options": {}}
    r = subprocess.run([sys.executable, "-m", "resdeploy.measure._bench_worker"], input=json.dumps(req),
                       capture_output=True, text=True, timeout=120)
    answer = json.loads(r.stdout)
    assert r.returncode == 2 and answer["error"]["type"] == "UsageError" and "unknown backend" in answer["error"]["message"]


def test_an_unexpected_worker_error_keeps_its_traceback(zoo_onnx: Path, monkeypatch, capsys) -> None:
    """pypa/build's way: the child's traceback crosses the boundary; the CLI shows it under --debug."""
    from resdeploy import cli
    from resdeploy.errors import StageError, from_payload

    req = {"artifact": str(zoo_onnx), "backend": "ort-cpu", "config": {"batches": [1], "bogus": 1},
           "model_options": {}}
    r = subprocess.run([sys.executable, "-m", "resdeploy.measure._bench_worker"], input=json.dumps(req),
                       capture_output=True, text=True, timeout=120)
    payload = json.loads(r.stdout)["error"]
    assert r.returncode == 1 and payload["type"] == "TypeError" and "bogus" in payload["message"]
    assert "Traceback" in payload["traceback"] and "worker_main" in payload["traceback"]
    error = from_payload(payload)
    assert isinstance(error, StageError) and error.child_traceback == payload["traceback"]

    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_bench", fail)
    with pytest.raises(StageError):
        cli.main(["--debug", "bench", str(zoo_onnx)])
    assert "worker_main" in capsys.readouterr().err


def test_names_that_moved_out_of_runtime_still_import_from_it() -> None:
    import resdeploy.device
    import resdeploy.measure
    from resdeploy.runtime import BenchConfig, environment, evaluate

    assert BenchConfig is resdeploy.measure.BenchConfig and evaluate is resdeploy.measure.evaluate
    assert environment is resdeploy.device.environment
    with pytest.raises(ImportError):
        from resdeploy.runtime import no_such_name  # noqa: F401
