"""DATA specs and the calibration protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resdeploy.data import balanced_indices, calibration_batches, load_dataset
from resdeploy.errors import DataSpecError
from resdeploy.preprocess import Preprocess
from resdeploy.zoo import FASHION_PREPROCESS


def test_fashion_mnist_splits() -> None:
    test = load_dataset("fashion-mnist:test")
    train = load_dataset("fashion-mnist:train")
    assert len(test) == 10_000 and len(train) == 60_000
    assert np.bincount(test.labels).tolist() == [1000] * 10
    x, _ = next(test.batches(FASHION_PREPROCESS, 8))
    assert x.shape == (8, 3, 32, 32) and x.dtype == np.float32
    # The grey channel is repeated and normalised with the training mean/std.
    np.testing.assert_array_equal(x[:, 0], x[:, 2])
    assert -1.0 < float(x.mean()) < 1.0


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path))
    assert len(ds) == 6 and list(ds.classes) == ["cat", "dog"]
    pre = Preprocess(16, (0.5,) * 3, (0.5,) * 3, resize_size=18)
    x, y = next(ds.batches(pre, 6))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((5, 3, 8, 8), np.float32), y=np.arange(5))
    ds = load_dataset(str(path))
    x, _ = next(ds.batches(Preprocess(8, (0,) * 3, (1,) * 3), 5))
    assert x.shape == (5, 3, 8, 8)
    with pytest.raises(DataSpecError, match="shape"):
        next(ds.batches(Preprocess(16, (0,) * 3, (1,) * 3), 5))


@pytest.mark.parametrize("spec", ["imagenet", "fashion-mnist:val", "missing.npz"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(DataSpecError):
        load_dataset(spec)


def test_empty_npz_and_empty_folder(tmp_path: Path) -> None:
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3, 8, 8), np.float32), y=np.zeros((0,), np.int64))
    with pytest.raises(DataSpecError, match="empty"):
        load_dataset(str(tmp_path / "e.npz"))
    (tmp_path / "folder" / "a").mkdir(parents=True)
    with pytest.raises(DataSpecError, match="no images"):
        load_dataset(str(tmp_path / "folder"))


def test_balanced_indices_are_seeded_and_even() -> None:
    labels = np.repeat(np.arange(10), 100)
    a = balanced_indices(labels, 50, seed=1)
    assert np.bincount(labels[a]).tolist() == [5] * 10
    assert a.tolist() == balanced_indices(labels, 50, seed=1).tolist()
    assert a.tolist() != balanced_indices(labels, 50, seed=2).tolist()


def test_calibration_batches_are_equal_sized() -> None:
    ds = load_dataset("fashion-mnist:train")
    batches = calibration_batches(ds, FASHION_PREPROCESS, input_name="input", size=100, batch_size=32)
    assert [b["input"].shape[0] for b in batches] == [32, 32, 32]
