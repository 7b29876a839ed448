"""export and fold-bn: structure (no BN, opset, symbolic batch, metadata) and numbers (ORT vs
torch, checked here independently of the export's own verification)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

from resdeploy.models import RESNET_BUILDERS

from ..conftest import assert_clean_error

REQUIRED_META = ("resdeploy.source", "resdeploy.input_size", "resdeploy.mean", "resdeploy.std", "resdeploy.num_classes")


def randomize_bn(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, so folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def ort_vs_torch(onnx_path: Path, module: torch.nn.Module, size: int, batches=(1, 4)) -> float:
    """Worst max|ort - torch| / max|torch| over the batches."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    for b in batches:
        x = np.random.default_rng(100 + b).standard_normal((b, 3, size, size)).astype(np.float32)
        got = sess.run(None, {name: x})[0]
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    return worst


def assert_deployable(path: Path, *, num_classes: int) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value"), "batch dimension must be symbolic"
    meta = {p.key: p.value for p in model.metadata_props}
    for key in REQUIRED_META:
        assert key in meta, key
    assert json.loads(meta["resdeploy.num_classes"]) == num_classes
    assert len(json.loads(meta["resdeploy.mean"])) == 3
    return model


def test_resnet50_state_dict_with_real_bn_statistics(tmp_path: Path, run_cli) -> None:
    ref = randomize_bn(torchvision.models.resnet50(num_classes=7))
    weights = tmp_path / "W.pth"
    torch.save(ref.state_dict(), weights)
    out = tmp_path / "r50.onnx"
    r = run_cli("export", "resnet50", "--weights", weights, "-o", out)
    assert r.code == 0, r.err
    assert "BatchNorm folded: 53" in r.out
    model = assert_deployable(out, num_classes=7)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["resdeploy.input_size"]) == [3, 224, 224]
    assert json.loads(meta["resdeploy.mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert ort_vs_torch(out, ref, 224) <= 1e-3


@pytest.mark.parametrize("name", RESNET_BUILDERS)
def test_every_builder_exports_and_matches_torch(name: str, tmp_path: Path, run_cli) -> None:
    # Random weights (seeded) at 64 px keep this quick; the graph is the same at 224.
    out = tmp_path / f"{name}.onnx"
    r = run_cli("export", name, "--num-classes", "10", "--input-size", "64", "-o", out)
    assert r.code == 0, r.err
    assert_deployable(out, num_classes=10)
    torch.manual_seed(0)
    module = getattr(torchvision.models, name)(num_classes=10).eval()
    assert ort_vs_torch(out, module, 64) <= 1e-3


def test_static_batch_and_opset(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s.onnx"
    assert run_cli("export", "resnet18", "--input-size", "32", "--batch", "2", "--opset", "13", "-o", out).code == 0
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]


def torchscript_exporter() -> dict[str, bool]:
    """``dynamo=False`` where torch has the keyword (2.5+); older torch is TorchScript-based already."""
    import inspect

    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _export_with_bn(module: torch.nn.Module, path: Path, size: int) -> None:
    """What other tools produce: a training-mode export that keeps BatchNormalization."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.zeros(2, 3, size, size),), buf, opset_version=17, **torchscript_exporter(),
            input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
        )
    module.eval()
    path.write_bytes(buf.getvalue())


def test_fold_bn_on_foreign_export(tmp_path: Path, run_cli) -> None:
    module = randomize_bn(torchvision.models.resnet18(num_classes=10))
    src, out = tmp_path / "bn.onnx", tmp_path / "folded.onnx"
    _export_with_bn(module, src, 48)
    reference = module.eval()  # the training-mode trace updated its running statistics, as in the file
    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(src)).graph.node) == 20
    r = run_cli("fold-bn", src, "-o", out)
    assert r.code == 0, r.err
    assert "folded 20" in r.out
    folded = onnx.load(str(out))
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    assert ort_vs_torch(out, reference, 48) <= 1e-3


def test_no_fold_bn_keeps_bn_then_fold_bn_removes_it(tmp_path: Path, run_cli) -> None:
    kept, folded = tmp_path / "kept.onnx", tmp_path / "folded.onnx"
    assert run_cli("export", "resnet18", "--input-size", "32", "--no-fold-bn", "-o", kept).code == 0
    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(kept)).graph.node) == 20
    assert run_cli("fold-bn", kept, "-o", folded).code == 0
    torch.manual_seed(0)
    module = torchvision.models.resnet18().eval()
    assert ort_vs_torch(kept, module, 32) <= 1e-3
    assert ort_vs_torch(folded, module, 32) <= 1e-3


def test_custom_mean_std_and_size_go_into_metadata(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "m.onnx"
    r = run_cli("export", "resnet18", "--input-size", "40", "--mean", "0.5", "--std", "0.25,0.5,1", "-o", out)
    assert r.code == 0, r.err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["resdeploy.mean"]) == [0.5, 0.5, 0.5]
    assert json.loads(meta["resdeploy.std"]) == [0.25, 0.5, 1.0]
    assert json.loads(meta["resdeploy.input_size"]) == [3, 40, 40]


# --- bad input: exit 2, one error line, nothing written ------------------------------------


def test_unknown_model(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "x.onnx"
    assert_clean_error(run_cli("export", "resnet51", "-o", out), 2, "unknown model")
    assert not out.exists()


def test_missing_weights_file(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "x.onnx"
    assert_clean_error(run_cli("export", "resnet18", "--weights", tmp_path / "nope.pth", "-o", out), 2, "not found")
    assert not out.exists()


def test_corrupt_weights_file(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all" * 10)
    out = tmp_path / "x.onnx"
    assert_clean_error(run_cli("export", "resnet18", "--weights", bad, "-o", out), 2, "cannot read weights")
    assert not out.exists()


def test_state_dict_classes_do_not_match(tmp_path: Path, run_cli) -> None:
    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), weights)
    out = tmp_path / "x.onnx"
    r = run_cli("export", "resnet18", "--weights", weights, "--num-classes", "10", "-o", out)
    assert_clean_error(r, 2, "5 classes", "--num-classes")
    assert not out.exists()


def test_state_dict_of_another_architecture(tmp_path: Path, run_cli) -> None:
    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), weights)
    out = tmp_path / "x.onnx"
    assert_clean_error(run_cli("export", "resnet34", "--weights", weights, "-o", out), 2, "does not fit resnet34")
    assert not out.exists()


def test_unwritable_output_directory(tmp_path: Path, run_cli) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = run_cli("export", "resnet18", "--input-size", "32", "-o", locked / "x.onnx")
        if r.code == 0:  # root ignores permissions; a missing directory is the portable case
            pytest.skip("running as a user who can write anywhere")
        assert_clean_error(r, 2, "not writable")
    finally:
        locked.chmod(0o700)
    assert not (locked / "x.onnx").exists()


def test_output_directory_missing(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.onnx"
    assert_clean_error(run_cli("export", "resnet18", "-o", out), 2, "does not exist")
    assert not out.exists()


def test_output_is_a_read_only_file_system_path(run_cli) -> None:
    assert_clean_error(run_cli("export", "resnet18", "-o", "/proc/x.onnx"), 2, "not writable")


def test_imagenet_weights_offline_fail_clearly(tmp_path: Path, run_cli, monkeypatch) -> None:
    """No network here: the hub download raises URLError; the user gets one clear line."""
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    out = tmp_path / "x.onnx"
    r = run_cli("export", "resnet50", "--weights", "IMAGENET1K_V2", "-o", out)
    assert_clean_error(r, 2, "cannot download", "--weights PATH")
    assert not out.exists()


def test_unknown_weights_enum(tmp_path: Path, run_cli) -> None:
    r = run_cli("export", "resnet50", "--weights", "IMAGENET1K_V9", "-o", tmp_path / "x.onnx")
    assert_clean_error(r, 2, "IMAGENET1K_V2")
