"""Shared fixtures. Tests run on the CPU with small models built in the test; the zoo model
is trained once per machine into $RESDEPLOY_CACHE (default ~/.cache/resdeploy) and reused."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from resdeploy import cli


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``resdeploy ARGS`` in-process (torch stays imported: fast)."""

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_clean_error(result: CliResult, code: int, *needles: str) -> None:
    """The contract: exit code, exactly one 'error:' line on stderr, no traceback."""
    assert result.code == code, (result.code, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])


@pytest.fixture(scope="session")
def zoo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zoo:fashion-resnet18 exported to ONNX (trains the model on first use on a machine)."""
    from resdeploy.export import export_onnx
    from resdeploy.models import load_model

    out = tmp_path_factory.mktemp("zoo") / "fashion-resnet18.onnx"
    export_onnx(load_model("zoo:fashion-resnet18"), out)
    return out


FAST_RUN = ("--val-limit", "500", "--iters", "5", "--warmup", "1", "--max-seconds", "5")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    """One pipeline run on the demo model (validation capped for speed), then a second one:
    (OUTDIR, Triton repository, first report, second report)."""
    import json

    root = tmp_path_factory.mktemp("run")
    out, repo = root / "out", root / "triton"
    args = ["run", *FAST_RUN, "-o", str(out), "--triton-repo", str(repo)]
    assert cli.main(args) == 0
    first = json.loads((out / "report.json").read_text())
    assert cli.main(args) == 0
    second = json.loads((out / "report.json").read_text())
    return out, repo, first, second


def _gpu_skip_reason() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    return "no CUDA GPU on this machine (the gpu tests run only where one is present)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def zoo_torch_top1() -> float:
    """Top-1 of zoo:fashion-resnet18 in torch over all 10,000 Fashion-MNIST test images."""
    import torch

    from resdeploy.data import load_dataset
    from resdeploy.models import load_model

    loaded = load_model("zoo:fashion-resnet18")
    test = load_dataset("fashion-mnist:test")
    assert len(test) == 10_000
    correct = 0
    with torch.no_grad():
        for x, y in test.batches(loaded.preprocess, 500):
            correct += int((loaded.module(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    return correct / len(test)
