"""DATA specs: ``fashion-mnist[:train|:test]``, an ImageFolder directory, or an ``.npz``.

A :class:`Dataset` holds labelled raw images and yields preprocessed batches on demand, so
that calibration and evaluation share the exact transform of the model
(:class:`~resdeploy.preprocess.Preprocess`). The calibration protocol is one iterable of
``{input_name: ndarray}`` batches (:func:`calibration_batches`), seeded and capped.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataSpecError
from .preprocess import Preprocess

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "balanced_indices",
    "calibration_batches",
    "load_dataset",
]

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    """Labelled images. Exactly one of ``images`` (uint8 N,H,W or N,C,H,W), ``files``
    (image paths decoded per batch) or ``tensors`` (float32 N,C,H,W, already preprocessed)."""

    name: str
    labels: np.ndarray
    images: np.ndarray | None = None
    files: Sequence[Path] | None = None
    tensors: np.ndarray | None = None
    classes: Sequence[str] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def preprocessed(self) -> bool:
        return self.tensors is not None

    def take(self, indices: np.ndarray | Sequence[int], preprocess: Preprocess) -> np.ndarray:
        """Preprocessed float32 (len(indices), 3, S, S) for the given indices."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.tensors is not None:
            x = self.tensors[idx]
            expected = preprocess.input_shape
            if tuple(x.shape[1:]) != expected:
                raise DataSpecError(
                    f"{self.name} holds tensors of shape {tuple(x.shape[1:])} but the model takes "
                    f"{expected}; re-export the .npz at the model's input size and channel count"
                )
            return np.ascontiguousarray(x, dtype=np.float32)
        if self.images is not None:
            return preprocess.apply(self.images[idx])
        assert self.files is not None
        return preprocess.apply([_read_image(self.files[i]) for i in idx])

    def batches(
        self,
        preprocess: Preprocess,
        batch_size: int,
        indices: np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(x, y)`` batches in order over ``indices`` (default: all)."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices)
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            yield self.take(part, preprocess), self.labels[part]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataSpecError(f"cannot read image {path}: {exc}; remove or replace the file") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("RESDEPLOY_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist", Path(env) / "FashionMNIST" / "raw"]
    dirs.append(DEBIAN_FASHION_MNIST)
    from ._io import cache_dir

    dirs.append(cache_dir() / "data" / "FashionMNIST" / "raw")
    return dirs


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _load_fashion_mnist(split: str) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    for d in _fashion_mnist_dirs():
        img = _find_idx(d, f"{prefix}-images-idx3-ubyte")
        lab = _find_idx(d, f"{prefix}-labels-idx1-ubyte")
        if img and lab:
            log.debug("Fashion-MNIST %s from %s", split, d)
            try:
                images, labels = _read_idx(img), _read_idx(lab)
            except (OSError, ValueError, IndexError, EOFError) as exc:
                raise DataSpecError(f"Fashion-MNIST files in {d} are unreadable ({exc}); reinstall them") from None
            return Dataset(
                name=f"fashion-mnist:{split}",
                images=images,
                labels=labels.astype(np.int64),
                classes=FASHION_MNIST_CLASSES,
            )
    # Online users: torchvision downloads into the cache.
    try:
        from torchvision.datasets import FashionMNIST

        from ._io import cache_dir

        FashionMNIST(str(cache_dir() / "data"), train=split == "train", download=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means "not available here"
        raise DataSpecError(
            f"Fashion-MNIST not found (looked in $RESDEPLOY_DATA, {DEBIAN_FASHION_MNIST}) and the "
            f"download failed ({type(exc).__name__}); install it with "
            "`apt-get install dataset-fashion-mnist` or set RESDEPLOY_DATA to a folder holding the idx files"
        ) from None
    return _load_fashion_mnist(split)


def _load_image_folder(root: Path) -> Dataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataSpecError(
            f"{root} has no class sub-folders; lay it out as ImageFolder does (ROOT/CLASS/IMAGE.png)"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).rglob("*")):
            if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file():
                files.append(p)
                labels.append(label)
    if not files:
        raise DataSpecError(f"{root} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))}); add some")
    return Dataset(name=str(root), files=files, labels=np.asarray(labels, dtype=np.int64), classes=classes)


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise DataSpecError(f"{path} must hold arrays 'x' (N,C,H,W float32) and 'y' (N,) labels")
            x, y = z["x"], z["y"]
    except DataSpecError:
        raise
    except (OSError, ValueError) as exc:
        raise DataSpecError(f"cannot read {path} as .npz ({exc}); write it with numpy.savez(x=..., y=...)") from None
    if x.ndim != 4:
        raise DataSpecError(f"{path}: x has shape {x.shape}; it must be (N,C,H,W), already preprocessed")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataSpecError(f"{path}: y must be integer labels of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
    return Dataset(name=str(path), tensors=x.astype(np.float32, copy=False), labels=y.astype(np.int64))


def load_dataset(spec: str, *, default_split: str = "test") -> Dataset:
    """Resolve a DATA spec. ``fashion-mnist`` alone means ``default_split``."""
    spec = str(spec)
    if spec.startswith("fashion-mnist"):
        _, _, split = spec.partition(":")
        split = split or default_split
        if split not in ("train", "test"):
            raise DataSpecError(f"unknown Fashion-MNIST split {split!r}; use fashion-mnist:train or fashion-mnist:test")
        ds = _load_fashion_mnist(split)
    else:
        path = Path(spec)
        if path.is_dir():
            ds = _load_image_folder(path)
        elif path.suffix == ".npz" and path.is_file():
            ds = _load_npz(path)
        elif path.suffix == ".npz" or path.exists():
            raise DataSpecError(
                f"{spec} is not a usable data set; give an ImageFolder directory or an .npz with x and y"
            )
        else:
            raise DataSpecError(
                f"unknown data spec {spec!r}; use fashion-mnist[:train|:test], an ImageFolder directory or an .npz file"
            )
    if len(ds) == 0:
        raise DataSpecError(f"data set {spec} is empty; point at a data set with images")
    return ds


def balanced_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` indices spread evenly over the classes, seeded, in a fixed order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    picked: list[int] = []
    depth = 0
    while len(picked) < count and any(depth < len(p) for p in per_class):
        for p in per_class:
            if depth < len(p) and len(picked) < count:
                picked.append(int(p[depth]))
        depth += 1
    return np.asarray(picked, dtype=np.int64)


def calibration_batches(
    dataset: Dataset,
    preprocess: Preprocess,
    *,
    input_name: str,
    size: int = 512,
    batch_size: int = 32,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """The one calibration protocol: equal-sized ``{input_name: x}`` batches.

    Equal sizes matter: ONNX Runtime's histogram calibrators fail on a ragged last batch, so
    the sample count is rounded down to a multiple of ``batch_size`` (at least one batch).
    """
    idx = balanced_indices(dataset.labels, min(size, len(dataset)), seed)
    batch_size = max(1, min(batch_size, len(idx)))
    usable = (len(idx) // batch_size) * batch_size
    idx = idx[:usable]
    return [{input_name: x} for x, _ in dataset.batches(preprocess, batch_size, idx)]
