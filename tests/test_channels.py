"""Every ResNet a user trains: grey (1-channel) and other channel counts, rectangular H x W inputs,
FP32 ONNX files from other tools, and bundles that stay in their folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from resdeploy.data import Dataset, load_dataset, read_image
from resdeploy.errors import DataSpecError, UsageError
from resdeploy.preprocess import GivenPreprocess, Preprocess, parse_size

from .conftest import assert_clean_error


def tiny_resnet(channels: int, num_classes: int = 10) -> torch.nn.Module:
    """torchvision's ResNet with one BasicBlock per stage and ``channels`` input channels."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    if channels != 3:
        model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model.eval()


def plain_export(model: torch.nn.Module, path: Path, shape: tuple[int, ...], *, opset: int = 13,
                 dynamic: bool = True, name: str = "images") -> Path:
    """``torch.onnx.export`` as another tool's user calls it, BatchNormalization kept (no resdeploy metadata)."""
    import inspect

    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, (torch.zeros(shape),), str(path), opset_version=opset, input_names=[name],
                      output_names=["output"], dynamic_axes={name: {0: "n"}, "output": {0: "n"}} if dynamic else None,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False, **extra)
    return path


# --- preprocessing ------------------------------------------------------------------------------


def test_sizes_parse_as_square_or_height_width() -> None:
    assert parse_size("224") == 224 and parse_size("224,160") == (224, 160) and parse_size([64, 48]) == (64, 48)
    assert parse_size("32,32") == 32 and parse_size(7) == 7
    for bad in ("0", "a,b", "1,2,3", [1.5, 2]):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_grey_conversion_is_pils_convert_L() -> None:
    """RGB uint8 images for a 1-channel model: PIL's convert("L") luma, bit for bit."""
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (5, 3, 9, 7), dtype=np.uint8)
    pre = Preprocess(input_size=(9, 7), mean=(0.5,), std=(0.25,), channels=1)
    got = pre.resize(rgb)
    want = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L"))[None] for im in rgb])
    assert got.shape == (5, 1, 9, 7) and np.array_equal(got, want)
    x = pre.normalize(got)
    assert x.shape == (5, 1, 9, 7) and np.allclose(x, (want / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_rectangular_resize_and_crop_keep_torchvisions_semantics() -> None:
    """Resize(shorter side) then CenterCrop((H, W)), and a plain Resize((H, W)), as torchvision does them."""
    from torchvision.transforms import v2

    images = torch.randint(0, 256, (3, 3, 50, 70), dtype=torch.uint8)
    crop = Preprocess(input_size=(24, 40), mean=(0.5,) * 3, std=(0.5,) * 3, resize_size=44)
    want = v2.Compose([v2.Resize(44, antialias=True), v2.CenterCrop((24, 40))])(images)
    assert np.array_equal(crop.resize(images.numpy()), want.numpy())
    plain = Preprocess(input_size=(64, 48), mean=(0.5,) * 3, std=(0.5,) * 3)
    want = v2.Resize((64, 48), antialias=True)(images)
    assert crop.input_shape == (3, 24, 40) and np.array_equal(plain.resize(images.numpy()), want.numpy())


def test_metadata_carries_channels_and_rectangles_and_old_files_read() -> None:
    pre = Preprocess(input_size=(64, 48), mean=(0.2,), std=(0.3,), channels=1)
    meta = pre.to_metadata()
    assert json.loads(meta["resdeploy.input_size"]) == [1, 64, 48] and json.loads(meta["resdeploy.mean"]) == [0.2]
    assert Preprocess.from_metadata(meta) == pre
    old = {"resdeploy.input_size": "[3, 32, 32]", "resdeploy.mean": "[0.1, 0.2, 0.3]", "resdeploy.std": "[1, 1, 1]",
           "resdeploy.resize_size": "null"}
    back = Preprocess.from_metadata(old)
    assert back is not None and back.input_shape == (3, 32, 32) and back.input_size == 32
    assert Preprocess.from_dict(back.to_dict()) == back
    assert Preprocess.from_dict({"input_size": 32, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1], "resize_size": None,
                                 "interpolation": "bilinear"}) == back  # a format-1 bundle before channels
    with pytest.raises(UsageError, match="mean has 3 values but the model takes 1 channel"):
        Preprocess(input_size=8, mean=(0.1, 0.2, 0.3), std=(1.0,), channels=1)


def test_image_folders_convert_for_the_models_channels(tmp_path: Path) -> None:
    """convert("L") for a grey model, as torchvision's Grayscale; 4 channels cannot come from images (exit 2)."""
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.full((10, 12, 3), (200, 30, 90), np.uint8)).save(tmp_path / cls / "x.png")
    assert read_image(tmp_path / "a" / "x.png", 1).shape == (1, 10, 12)
    assert int(read_image(tmp_path / "a" / "x.png", 1)[0, 0, 0]) == Image.new("RGB", (1, 1), (200, 30, 90)).convert("L").getpixel((0, 0))
    ds = load_dataset(str(tmp_path))
    grey = Preprocess(input_size=(6, 8), mean=(0.5,), std=(0.5,), channels=1)
    assert ds.take([0, 1], grey).shape == (2, 1, 6, 8)
    four = Preprocess(input_size=8, mean=(0.5,), std=(0.5,), channels=4)
    with pytest.raises(DataSpecError, match=r"give the data as an \.npz"):
        ds.take([0], four)
    fashion = Dataset("f", labels=np.zeros(2, np.int64), images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataSpecError, match="4 channels"):
        fashion.take([0], four)
    arrays = Dataset("npz", labels=np.zeros(2, np.int64), tensors=np.zeros((2, 4, 8, 8), np.float32))
    assert arrays.take([0, 1], four).shape == (2, 4, 8, 8)


# --- a 4-channel model from arrays ---------------------------------------------------------------


def test_four_channel_model_quantizes_and_evaluates_from_npz(tmp_path: Path, run_cli) -> None:
    from resdeploy.export import export_onnx
    from resdeploy.models import LoadedModel, ModelSpec

    model = tiny_resnet(4, num_classes=3)
    pre = Preprocess(input_size=(20, 16), mean=(0.5,), std=(0.5,), channels=4)
    fp32 = tmp_path / "m4.onnx"
    export_onnx(LoadedModel(model, pre, 3, ModelSpec("m4")), fp32)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 4, 20, 16)).astype(np.float32),
             y=rng.integers(0, 3, 40))
    r = run_cli("quantize", fp32, "-o", tmp_path / "q.onnx", "--precision", "int8", "--calib", tmp_path / "d.npz",
                "--calib-size", "32")
    assert r.code == 0, r.err
    r = run_cli("eval", tmp_path / "q.onnx", "--data", tmp_path / "d.npz", "--reference", fp32, "--json",
                tmp_path / "e.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "e.json").read_text())["results"][0]["n"] == 40
    r = run_cli("quantize", fp32, "-o", tmp_path / "q2.onnx", "--precision", "int8", "--calib", "fashion-mnist:train")
    assert_clean_error(r, 2, "4 channels", ".npz")


# --- ONNX from other tools ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_grey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-channel model by plain torch.onnx.export: input `images`, opset 13, BatchNormalization kept."""
    folder = tmp_path_factory.mktemp("foreign")
    path = plain_export(tiny_resnet(1), folder / "grey.onnx", (1, 1, 28, 28))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" in ops and not onnx.load(str(path)).metadata_props
    return path


@pytest.mark.parametrize("dynamic", [True, False])
def test_foreign_onnx_is_quantized_and_evaluated_given_its_preprocessing(tmp_path: Path, run_cli,
                                                                         dynamic: bool) -> None:
    src = plain_export(tiny_resnet(1), tmp_path / "grey.onnx", (1, 1, 28, 28), dynamic=dynamic)
    flags = ("--input-size", "28", "--mean", "0.286", "--std", "0.353")
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--precision", "int8", "--calib", "fashion-mnist:train",
                "--calib-size", "32", *flags)
    assert r.code == 0, r.err
    q = onnx.load(str(tmp_path / "q.onnx"))
    meta = {p.key: p.value for p in q.metadata_props}
    assert json.loads(meta["resdeploy.input_size"]) == [1, 28, 28] and json.loads(meta["resdeploy.mean"]) == [0.286]
    assert meta["resdeploy.num_classes"] == "10" and meta["resdeploy.source"] == str(src.resolve())
    assert not any(n.op_type == "BatchNormalization" for n in q.graph.node)
    assert q.graph.input[0].name == "images" and q.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    # Evaluated against the file as given (named in the metadata, preprocessed as written there): no flags.
    r = run_cli("eval", tmp_path / "q.onnx", "--data", "fashion-mnist:test", "--limit", "64",
                "--json", tmp_path / "e.json")
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["reference"]["artifact"] == str(src.resolve()) and report["results"][0]["n"] == 64
    assert report["results"][0]["agreement_top1"] >= 0.9
    # The file as given, with the flags: its own reference.
    r = run_cli("eval", src, "--data", "fashion-mnist:test", "--limit", "16", *flags, "--json", tmp_path / "f.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "f.json").read_text())["results"][0]["agreement_top1"] == 1.0


def test_foreign_onnx_without_preprocessing_or_of_the_wrong_kind_is_exit_2(foreign_grey: Path, tmp_path: Path,
                                                                            run_cli) -> None:
    r = run_cli("quantize", foreign_grey, "-o", tmp_path / "q.onnx", "--precision", "int8",
                "--calib", "fashion-mnist:train")
    assert_clean_error(r, 2, "no resdeploy preprocessing metadata", "--mean")
    r = run_cli("eval", foreign_grey, "--data", "fashion-mnist:test", "--input-size", "32", "--mean", "0.5",
                "--std", "0.5")
    assert_clean_error(r, 2, "does not match", "28 x 28")
    # Two inputs, and an input that is not an image: named.
    two = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 3, 8, 8]),
         onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])]))
    onnx.save(two, str(tmp_path / "two.onnx"))
    r = run_cli("quantize", tmp_path / "two.onnx", "-o", tmp_path / "q.onnx", "--precision", "fp16")
    assert_clean_error(r, 2, "2 inputs", "'a' float32 (1, 3, 8, 8)", "'b'")
    ids = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Cast", ["ids"], ["y"], to=onnx.TensorProto.FLOAT)], "g",
        [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n", 128])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 128])]))
    onnx.save(ids, str(tmp_path / "ids.onnx"))
    r = run_cli("eval", tmp_path / "ids.onnx", "--data", "fashion-mnist:test", "--mean", "0", "--std", "1")
    assert_clean_error(r, 2, "'ids' int64 (n, 128)", "not a float32 N x C x H x W")
    assert not (tmp_path / "q.onnx").exists()


def test_given_preprocessing_must_agree_with_a_models_own(foreign_grey: Path) -> None:
    pre = Preprocess(input_size=28, mean=(0.5,), std=(0.5,), channels=1)
    GivenPreprocess(28, (0.5,), None).check(pre, "m.onnx")
    with pytest.raises(UsageError, match="carries its own preprocessing"):
        GivenPreprocess(None, (0.4,), None).check(pre, "m.onnx")
    assert GivenPreprocess("28", 0.5, [0.5]).for_input((1, 28, 28), "m.onnx") == pre


def test_run_settings_take_height_width(tmp_path: Path, run_cli) -> None:
    from resdeploy.pipeline import RunConfig, load_config

    (tmp_path / "run.toml").write_text('input-size = [64, 48]\nmean = [0.5]\n')
    settings = load_config(tmp_path / "run.toml")
    assert settings == {"input_size": (64, 48), "mean": (0.5,)}
    assert RunConfig(**settings).model.input_size == (64, 48)
    (tmp_path / "run.toml").write_text('input-size = "64,48,3"\n')
    assert_clean_error(run_cli("run", tmp_path / "run.toml", "-o", tmp_path / "o"), 2, "input-size")
    assert_clean_error(run_cli("export", "resnet18", "--input-size", "64x", "-o", tmp_path / "x.onnx"), 2,
                       "S or H,W")


def test_fold_bn_folds_what_torchs_exporter_shares_through_identity_nodes(foreign_grey: Path, tmp_path: Path,
                                                                           run_cli) -> None:
    r = run_cli("fold-bn", foreign_grey, "-o", tmp_path / "f.onnx")
    assert r.code == 0, r.err
    ops = {n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops
