"""The images users really have: every format and mode torchvision's ImageFolder reads, the
files it skips, and the files that cannot be right, each named in a one-line exit-2 error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resdeploy.data import load_dataset, read_image
from resdeploy.errors import DataSpecError
from resdeploy.preprocess import Preprocess

from .conftest import assert_clean_error

PRE = Preprocess(16, (0.5,) * 3, (0.5,) * 3, resize_size=18)


def _rgb(seed: int = 0, size: tuple[int, int] = (24, 20)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def _modes(d: Path) -> dict[str, Path]:
    """One file per format and mode torchvision's pil_loader converts to RGB."""
    d.mkdir(parents=True, exist_ok=True)
    img = _rgb()
    files = {
        "jpeg": d / "a.jpg", "png": d / "b.PNG", "webp": d / "c.webp", "bmp": d / "d.bmp", "tiff": d / "e.tif",
        "grey": d / "f.png", "palette": d / "g.png", "rgba": d / "h.png", "cmyk": d / "i.jpg", "16bit": d / "j.png",
    }
    img.save(files["jpeg"], quality=95)
    img.save(files["png"])
    img.save(files["webp"])
    img.save(files["bmp"])
    img.save(files["tiff"])
    img.convert("L").save(files["grey"])
    img.convert("P").save(files["palette"])
    img.convert("RGBA").save(files["rgba"])
    img.convert("CMYK").save(files["cmyk"])
    Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(files["16bit"])
    return files


def test_every_mode_becomes_rgb_as_torchvision_reads_it(tmp_path: Path) -> None:
    for name, path in _modes(tmp_path).items():
        arr = read_image(path)
        with Image.open(path) as im:
            expected = np.asarray(im.convert("RGB")).transpose(2, 0, 1)  # torchvision's pil_loader
        assert arr.shape == (3, 24, 20) and arr.dtype == np.uint8, name
        np.testing.assert_array_equal(arr, expected, err_msg=name)


def test_image_folder_skips_what_imagefolder_skips_and_hidden_files(tmp_path: Path) -> None:
    _modes(tmp_path / "cat")
    (tmp_path / "dog").mkdir()
    _rgb(1).save(tmp_path / "dog" / "x.jpeg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\x00\x01")
    _rgb(2).save(tmp_path / "dog" / "._x.jpg")  # macOS resource fork names an image too
    (tmp_path / "dog" / ".ipynb_checkpoints").mkdir()
    _rgb(3).save(tmp_path / "dog" / ".ipynb_checkpoints" / "y.jpg")
    (tmp_path / ".git").mkdir()
    ds = load_dataset(str(tmp_path))
    assert list(ds.classes) == ["cat", "dog"] and np.bincount(ds.labels).tolist() == [10, 1]
    x, _ = next(ds.batches(PRE, 11))
    assert x.shape == (11, 3, 16, 16) and np.isfinite(x).all()


@pytest.mark.parametrize("content, needle", [
    (b"", "cannot read image"),
    (b"this is not a jpeg at all", "cannot read image"),
])
def test_unreadable_images_name_their_path(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "cls").mkdir()
    bad = tmp_path / "cls" / "broken.jpg"
    bad.write_bytes(content)
    ds = load_dataset(str(tmp_path))
    with pytest.raises(DataSpecError, match=needle) as info:
        ds.take([0], PRE)
    assert str(bad) in str(info.value)


def test_truncated_image_names_its_path(tmp_path: Path) -> None:
    (tmp_path / "cls").mkdir()
    good = tmp_path / "cls" / "full.jpg"
    _rgb(size=(200, 200)).save(good, quality=95)
    cut = tmp_path / "cls" / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataSpecError, match=r"cut\.jpg"):
        read_image(cut)


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 200x200 image is then over the limit
    path = tmp_path / "bomb.png"
    _rgb(size=(200, 200)).save(path)
    with pytest.raises(DataSpecError, match="too large to decode safely") as info:
        read_image(path)
    assert "bomb.png" in str(info.value)


def test_eval_exits_2_on_a_bad_image_and_on_class_mismatch(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    root = tmp_path / "val"
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        _rgb(c).save(root / f"c{c}" / "ok.png")
    (root / "c1" / "zero.png").write_bytes(b"")
    assert_clean_error(run_cli("eval", zoo_onnx, "--data", root), 2, "zero.png")
    (root / "c1" / "zero.png").unlink()
    (root / "empty").mkdir()
    assert_clean_error(run_cli("eval", zoo_onnx, "--data", root), 2, "empty", "holds no images")
    (root / "empty").rmdir()
    for c in range(3, 12):  # 12 classes for a 10-class model
        (root / f"c{c:02d}").mkdir()
        _rgb(c).save(root / f"c{c:02d}" / "ok.png")
    assert_clean_error(run_cli("eval", zoo_onnx, "--data", root), 2, "12 classes", "10 outputs")


def test_nan_and_constant_data_cannot_be_calibrated(zoo_onnx: Path, tmp_path: Path, run_cli) -> None:
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(16) % 10)
    r = run_cli("quantize", zoo_onnx, "-o", tmp_path / "q.onnx", "--precision", "int8", "--calib", tmp_path / "nan.npz")
    assert_clean_error(r, 2, "NaN or Inf")
    np.savez(tmp_path / "flat.npz", x=np.ones((16, 3, 32, 32), np.float32), y=np.arange(16) % 10)
    r = run_cli("quantize", zoo_onnx, "-o", tmp_path / "q.onnx", "--precision", "int8", "--calib", tmp_path / "flat.npz")
    assert_clean_error(r, 2, "constant")
    assert not (tmp_path / "q.onnx").exists()
