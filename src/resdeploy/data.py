"""DATA specs: ``fashion-mnist[:train|:test]``, an ImageFolder directory, or an ``.npz``.

A :class:`Dataset` holds labelled raw images and yields preprocessed batches on demand, so
that calibration and evaluation share the exact transform of the model
(:class:`~resdeploy.preprocess.Preprocess`). The calibration protocol is one iterable of
``{input_name: ndarray}`` batches (:func:`calibration_batches`), seeded and capped.

ImageFolder trees are read as torchvision's ``ImageFolder`` reads them (same extensions, case
insensitive; images converted with PIL's ``convert("RGB")`` for a 3-channel model, so greyscale,
palette, RGBA, CMYK and 16-bit images become RGB as in training, and with ``convert("L")`` for a
1-channel model, as ``transforms.Grayscale`` does; EXIF orientation is left as that loader leaves
it); a model of another channel count is fed from arrays (an ``.npz``), never from images, except that hidden files and folders (``.DS_Store``, ``._IMG.jpg``, ``.ipynb_checkpoints``)
are skipped. An unreadable, truncated or empty image, or a decompression bomb, is a one-line
error naming its path.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataSpecError
from .preprocess import Preprocess

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "IMAGE_SUFFIXES",
    "Dataset",
    "balanced_indices",
    "calibration_batches",
    "check_finite",
    "in_memory",
    "load_dataset",
]

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def check_classes(self, model_classes: int, what: str) -> None:
        """The data's classes must be among the model's outputs."""
        if self.num_classes > model_classes:
            raise DataSpecError(
                f"{self.name} has {self.num_classes} classes but {what} has {model_classes} outputs; "
                "give data labelled for this model (ImageFolder classes are its sorted sub-folder names)"
            )

    def resized(self, indices: np.ndarray | Sequence[int], preprocess: Preprocess, workers: int = 1) -> np.ndarray:
        """uint8 (len(indices), C, H, W): decoded, converted to the model's channels and resized,
        not yet normalised; image files are decoded by ``workers`` threads (PIL and torch release the GIL)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.images is None and self.files is None:
            raise DataSpecError(f"{self.name} is already preprocessed; it has no images to resize")
        if preprocess.channels not in (1, 3):
            raise DataSpecError(
                f"the model takes {preprocess.channels} channels and {self.name} holds images; resdeploy converts "
                f"images to 1 (grey) or 3 (RGB) channels only: give the data as an .npz of preprocessed "
                f"(N, {preprocess.channels}, H, W) arrays"
            )
        if self.images is not None:
            return preprocess.resize(self.images[idx])
        assert self.files is not None
        files = self.files

        def one(i: int) -> np.ndarray:
            return preprocess.resize([read_image(files[i], preprocess.channels)])[0]

        if workers <= 1 or len(idx) < 2:
            return np.stack([one(int(i)) for i in idx])
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return np.stack(list(pool.map(one, (int(i) for i in idx))))

    def take(self, indices: np.ndarray | Sequence[int], preprocess: Preprocess, workers: int = 1) -> np.ndarray:
        """Preprocessed float32 (len(indices), C, H, W) for the given indices."""
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
        return preprocess.normalize(self.resized(idx, preprocess, workers))

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


def read_image(path: Path, channels: int = 3) -> np.ndarray:
    """(C, H, W) uint8: through PIL's ``convert("RGB")`` for 3 channels, as torchvision's
    ``pil_loader``, or ``convert("L")`` for 1, as ``transforms.Grayscale`` converts a PIL image."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise DataSpecError(f"cannot convert image {path} to {channels} channels (only 1, grey, or 3, RGB); give the "
                            f"data as an .npz of preprocessed (N, {channels}, H, W) arrays")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataSpecError(f"image {path} is too large to decode safely ({exc}); remove or shrink it") from exc
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataSpecError(f"cannot read image {path}: {exc}; remove or replace the file") from exc
    return arr[None].copy() if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def check_finite(x: np.ndarray, what: str) -> None:
    """NaN or Inf inputs cannot be calibrated or evaluated: a one-line error naming the data."""
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
        raise DataSpecError(f"{what} holds NaN or Inf values ({bad} of {len(x)} images in one batch); "
                            "fix the preprocessing that produced it")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist_dirs() -> list[Path]:
    from ._io import cache_dir

    dirs = []
    env = os.environ.get("RESDEPLOY_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist", Path(env) / "FashionMNIST" / "raw"]
    return [*dirs, DEBIAN_FASHION_MNIST, cache_dir() / "data" / "FashionMNIST" / "raw"]


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_fashion_dir(d: Path, split: str) -> Dataset | None:
    prefix = "train" if split == "train" else "t10k"
    img, lab = _find_idx(d, f"{prefix}-images-idx3-ubyte"), _find_idx(d, f"{prefix}-labels-idx1-ubyte")
    if not (img and lab):
        return None
    log.debug("Fashion-MNIST %s from %s", split, d)
    try:
        images, labels = _read_idx(img), _read_idx(lab)
    except (OSError, ValueError, IndexError, EOFError) as exc:
        raise DataSpecError(f"Fashion-MNIST files in {d} are unreadable ({exc}); reinstall them") from exc
    if len(images) != len(labels):
        raise DataSpecError(f"Fashion-MNIST files in {d} disagree ({len(images)} images, {len(labels)} labels); "
                            "reinstall them")
    return Dataset(name=f"fashion-mnist:{split}", images=images, labels=labels.astype(np.int64),
                   classes=FASHION_MNIST_CLASSES)


def _load_fashion_mnist(split: str) -> Dataset:
    for d in _fashion_mnist_dirs():
        found = _read_fashion_dir(d, split)
        if found is not None:
            return found
    try:  # online users: torchvision downloads into the cache
        from torchvision.datasets import FashionMNIST

        from ._io import cache_dir

        FashionMNIST(str(cache_dir() / "data"), train=split == "train", download=True)
    except Exception as exc:
        raise DataSpecError(
            f"Fashion-MNIST not found (looked in $RESDEPLOY_DATA, {DEBIAN_FASHION_MNIST}) and the "
            f"download failed ({type(exc).__name__}); install it with "
            "`apt-get install dataset-fashion-mnist` or set RESDEPLOY_DATA to a folder holding the idx files"
        ) from exc
    return _load_fashion_mnist(split)


def _class_files(folder: Path) -> list[Path]:
    """Image files under one class folder, as ImageFolder walks it, hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(dirpath) / name)
    return found


def _load_image_folder(root: Path) -> Dataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataSpecError(
            f"{root} has no class sub-folders; lay it out as ImageFolder does (ROOT/CLASS/IMAGE.png)"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        found = _class_files(root / cls)
        if not found:
            raise DataSpecError(f"class folder {root / cls} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                                "add some or remove the folder")
        files += found
        labels += [label] * len(found)
    return Dataset(name=str(root), files=files, labels=np.asarray(labels, dtype=np.int64), classes=classes)


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise DataSpecError(f"{path} must hold arrays 'x' (N,C,H,W float32) and 'y' (N,) labels")
            x, y = z["x"], z["y"]
    except DataSpecError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DataSpecError(f"cannot read {path} as .npz ({exc}); write it with numpy.savez(x=..., y=...)") from exc
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise DataSpecError(f"{path}: x is {x.dtype} {x.shape}; it must be float (N,C,H,W), already preprocessed")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataSpecError(f"{path}: y must be integer labels of shape ({x.shape[0]},), got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DataSpecError(f"{path}: labels must be 0 or more, got {int(y.min())}")
    x = x.astype(np.float32, copy=False)
    check_finite(x, str(path))
    return Dataset(name=str(path), tensors=x, labels=y.astype(np.int64))


# Data sets handed over in memory (the library's arrays, DataLoaders, ...), by the spec that names them.
_IN_MEMORY: dict[str, Dataset] = {}
_IN_MEMORY_LOCK = threading.Lock()
_IN_MEMORY_IDS = itertools.count()


@contextlib.contextmanager
def in_memory(dataset: Dataset) -> Iterator[str]:
    """A DATA spec that names ``dataset`` while the block runs, so that stages taking DATA specs
    (their configs are strings) take the library's in-memory data unchanged, without a file."""
    with _IN_MEMORY_LOCK:
        spec = f"<in-memory {next(_IN_MEMORY_IDS)}: {dataset.name}>"
        _IN_MEMORY[spec] = dataset
    try:
        yield spec
    finally:
        with _IN_MEMORY_LOCK:
            _IN_MEMORY.pop(spec, None)


def load_dataset(spec: str, *, default_split: str = "test") -> Dataset:
    """Resolve a DATA spec. ``fashion-mnist`` alone means ``default_split``."""
    spec = str(spec)
    if spec in _IN_MEMORY:
        return _IN_MEMORY[spec]
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
        elif path.exists():
            raise DataSpecError(
                f"{spec} is not a usable data set; give an ImageFolder directory or an .npz with x and y"
            )
        else:
            raise DataSpecError(
                f"unknown data spec {spec!r} (no such file or folder); use fashion-mnist[:train|:test], an ImageFolder directory or an .npz file"
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

    The sample count is rounded down to a multiple of ``batch_size`` (at least one batch), so
    every batch has the same shape and weighs the same in the streaming calibrator.
    Calibration data that cannot be right (NaN or Inf, every image constant) is an error.
    """
    if size > len(dataset):
        log.warning("%s has %d images, fewer than the %d asked for calibration; using all of them",
                    dataset.name, len(dataset), size)
    idx = balanced_indices(dataset.labels, min(size, len(dataset)), seed)
    batch_size = max(1, min(batch_size, len(idx)))
    usable = (len(idx) // batch_size) * batch_size
    idx = idx[:usable]
    batches = [{input_name: x} for x, _ in dataset.batches(preprocess, batch_size, idx)]
    constant = 0
    for b in batches:
        x = b[input_name]
        check_finite(x, f"calibration data {dataset.name}")
        flat = x.reshape(len(x), -1)
        constant += int(np.count_nonzero(flat.max(axis=1) == flat.min(axis=1)))
    if constant == usable:
        raise DataSpecError(f"every calibration image of {dataset.name} is constant (one value per image); "
                            "calibrate on real images")
    if constant:
        log.warning("%d of %d calibration images are constant", constant, usable)
    return batches
