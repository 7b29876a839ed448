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


class Payload:
    """Unpickling this writes a file: the side effect an untrusted .pt could have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickled_module_is_refused_without_running_it(tmp_path: Path, run_cli) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker)}, path)
    r = run_cli("export", path, "--input-size", "32", "-o", tmp_path / "x.onnx")
    assert_clean_error(r, 2, "pickled module", "--trust-pickle", "torch.export.save")
    assert not marker.exists(), "unpickling ran code"
    assert not (tmp_path / "x.onnx").exists()


def test_pickled_module_file_with_trust_pickle(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_resnet(), path)
    with pytest.raises(ModelSpecError, match="--trust-pickle"):
        load_model(ModelSpec(str(path), input_size=32))
    loaded = load_model(ModelSpec(str(path), input_size=32, trust_pickle=True))
    assert loaded.num_classes == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.module(x).numpy(), tiny_resnet()(x).numpy(), rtol=1e-5, atol=1e-5)


def test_torch_export_program_is_a_safe_model_format(tmp_path: Path, run_cli) -> None:
    module = tiny_resnet()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.zeros(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}})
    path = tmp_path / "m.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "m.onnx"
    r = run_cli("export", path, "--input-size", "32", "-o", out)
    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 5):
        assert_clean_error(r, 2, "needs torch 2.5 or newer")  # JetPack 6.0's torch 2.3
        return
    assert r.code == 0, r.err
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("forward, found", [
    ("return (self.net(x), self.net(x))", "a tuple of 2 values"),
    ("return {'logits': self.net(x)}", "a dict with keys ['logits']"),
    ("return self.net(x)[:, :, None]", "a tensor of shape (2, 4, 1)"),
])
def test_models_that_are_not_classifiers_are_named(tmp_path: Path, monkeypatch, run_cli, forward, found) -> None:
    (tmp_path / "odd.py").write_text(
        "import torch, torchvision\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.net = torchvision.models.resnet18(num_classes=4)\n"
        f"    def forward(self, x):\n        {forward}\n"
        "def build():\n    return M()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("odd", None)
    r = run_cli("export", "odd:build", "--input-size", "32", "-o", tmp_path / "x.onnx")
    assert_clean_error(r, 2, found, "(N, classes) logits")
    sys.modules.pop("odd", None)


def test_model_with_one_input_channel_is_read_from_its_first_convolution(tmp_path: Path, monkeypatch, run_cli) -> None:
    """A grey model (conv1 = Conv2d(1, ...)) exports as N x 1 x H x W with one-value mean/std
    (ImageNet's averaged, unless --mean/--std say otherwise); a mean of the wrong length is exit 2."""
    import json

    import onnx

    (tmp_path / "grey.py").write_text(
        "import torch, torchvision\n"
        "def build():\n"
        "    m = torchvision.models.resnet18(num_classes=4)\n"
        "    m.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)\n"
        "    return m\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    r = run_cli("export", "grey:build", "--input-size", "32", "-o", tmp_path / "x.onnx")
    assert r.code == 0, r.err
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "x.onnx")).metadata_props}
    assert json.loads(meta["resdeploy.input_size"]) == [1, 32, 32]
    assert json.loads(meta["resdeploy.mean"]) == [0.449] and json.loads(meta["resdeploy.std"]) == [0.226]
    r = run_cli("export", "grey:build", "--mean", "0.5,0.5,0.4", "--std", "0.2", "-o", tmp_path / "y.onnx")
    assert_clean_error(r, 2, "mean has 3 values but the model takes 1 channel")
    assert not (tmp_path / "y.onnx").exists()
    sys.modules.pop("grey", None)


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
