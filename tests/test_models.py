"""MODEL specs other than builders: TorchScript, pickled modules, factories, zoo errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision

from resdeploy.errors import ModelSpecError
from resdeploy.models import ModelSpec, load_model

from .conftest import assert_clean_error


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(3)
    return torchvision.models.resnet18(num_classes=4).eval()


def test_torchscript_file_exports(tmp_path: Path, run_cli) -> None:
    module = tiny_resnet()
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3, 32, 32)), str(ts))
    out = tmp_path / "m.onnx"
    r = run_cli("export", ts, "--input-size", "32", "-o", out)
    assert r.code == 0, r.err
    model = onnx.load(str(out))
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert {p.key: p.value for p in model.metadata_props}["resdeploy.num_classes"] == "4"


def test_pickled_module_file(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_resnet(), path)
    loaded = load_model(ModelSpec(str(path), input_size=32))
    assert loaded.num_classes == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.module(x).numpy(), tiny_resnet()(x).numpy(), rtol=1e-5, atol=1e-5)


def test_state_dict_given_as_module_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "sd.pth"
    torch.save(tiny_resnet().state_dict(), path)
    with pytest.raises(ModelSpecError, match="state_dict, not a module"):
        load_model(str(path))


def test_factory_spec_gets_num_classes(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "import torchvision\n"
        "def build(num_classes=1000):\n"
        "    return torchvision.models.resnet18(num_classes=num_classes)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model(ModelSpec("mymodels:build", num_classes=6, input_size=32))
    assert loaded.num_classes == 6
    sys.modules.pop("mymodels", None)


def test_factory_that_cannot_be_imported(tmp_path: Path, run_cli) -> None:
    r = run_cli("export", "no_such_pkg.models:build", "-o", tmp_path / "x.onnx")
    assert_clean_error(r, 2, "cannot import")


def test_unknown_zoo_model(tmp_path: Path, run_cli) -> None:
    assert_clean_error(run_cli("export", "zoo:nope", "-o", tmp_path / "x.onnx"), 2, "zoo:fashion-resnet18")


def test_checkpoint_wrappers_and_dataparallel_prefix_are_accepted(tmp_path: Path) -> None:
    sd = {f"module.{k}": v for k, v in tiny_resnet().state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    loaded = load_model(ModelSpec("resnet18", weights=str(path)))
    assert loaded.num_classes == 4
