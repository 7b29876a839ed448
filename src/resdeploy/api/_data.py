"""The library's data, presented to the stages as they take it: a DATA spec stays a spec; arrays
become a :class:`~resdeploy.data.Dataset` over the same memory; a torch ``Dataset``, a
``DataLoader`` or any iterable of batches is read as it comes.

What a batch may be (NNCF's ``nncf.Dataset`` and ModelOpt's ``forward_loop`` take the user's own
loader the same way): images, or ``(images, labels)`` (more items after the labels, as some
loaders yield, are ignored). Images are float32 N,C,H,W already preprocessed for the model, or
uint8 images (N,H,W,C, N,C,H,W or N,H,W) that get the model's own preprocessing from its ONNX
metadata; torch tensors are taken as their NumPy arrays. A torch ``Dataset`` yields one image
(a tensor, an array or a PIL image) or ``(image, label)`` per index and is batched here.

Nothing is written to disk. Evaluation reads a streamed source once, batch by batch; calibration
keeps only the ``calib_size`` images it uses (from a torch ``Dataset`` a seeded random choice of
indices, from a loader or iterable the first ones: shuffle it for a random sample).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import DataSpecError
from ..measure.evaluate import Batch
from ..preprocess import Preprocess

__all__ = ["Batch", "DataLike", "Stream", "array_batches", "materialize", "resolve"]

# A DATA spec, an array, (images, labels), a torch Dataset or DataLoader, or an iterable of batches.
DataLike = Any

_CHANNELS = (1, 3, 4)


def _torch_type(obj: Any, name: str) -> bool:
    """``obj`` is an instance of ``torch.<name>`` (looked up only where torch is imported already)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    cls: Any = torch
    for part in name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            return False
    return isinstance(obj, cls)


def _array(obj: Any) -> np.ndarray | None:
    """An ndarray, a torch tensor's array, or a PIL image's (H,W[,C]) pixels; else None."""
    if isinstance(obj, np.ndarray):
        return obj
    if _torch_type(obj, "Tensor"):
        return obj.detach().cpu().numpy()
    image = sys.modules.get("PIL.Image")
    if image is not None and isinstance(obj, image.Image):
        return np.asarray(obj if obj.mode in ("L", "RGB") else obj.convert("RGB"))
    return None


def _images(x: np.ndarray, what: str) -> np.ndarray:
    """A batch of images as the stages take it: uint8 N,C,H,W or N,H,W; float32 N,C,H,W."""
    if x.dtype == np.uint8:
        if x.ndim == 4 and x.shape[-1] in _CHANNELS and x.shape[1] not in _CHANNELS:
            return x.transpose(0, 3, 1, 2)  # N,H,W,C -> N,C,H,W: a view, not a copy
        if x.ndim in (3, 4):
            return x
        raise DataSpecError(f"{what}: uint8 images must be N,H,W,C, N,C,H,W or N,H,W, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        if x.ndim != 4:
            raise DataSpecError(f"{what}: float images must be N,C,H,W and already preprocessed, got shape {x.shape}; "
                                "give uint8 images to have them preprocessed for the model")
        return x.astype(np.float32, copy=False)
    raise DataSpecError(f"{what}: images must be uint8 (raw) or float32 (preprocessed), got {x.dtype}")


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    a = _array(y)
    a = np.asarray(y) if a is None else a
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer) or (n and int(a.min()) < 0):
        raise DataSpecError(f"{what}: labels must be {n} integers of 0 or more, one per image, got {a.dtype} "
                            f"{a.shape}")
    return a.astype(np.int64, copy=False)


def _pair(obj: Any) -> tuple[np.ndarray, Any] | None:
    """``(images, labels, ...)`` as a tuple or list, the labels one per image; else None."""
    if not isinstance(obj, (tuple, list)) or len(obj) < 2:
        return None
    x = _array(obj[0])
    if x is None or x.ndim < 3:
        return None
    y = _array(obj[1])
    y = np.asarray(obj[1]) if y is None and isinstance(obj[1], (list, tuple)) else y
    if y is None or y.ndim != 1 or len(y) != len(x):
        return None
    return x, obj[1]


def _batch(item: Any, what: str) -> Batch:
    pair = _pair(item)
    if pair is not None:
        images = _images(pair[0], what)
        return images, _labels(pair[1], len(images), what)
    x = _array(item)
    if x is None:
        raise DataSpecError(f"{what} yields a {type(item).__name__}; a batch must be images (an array or tensor) "
                            "or (images, labels)")
    return _images(x, what), None


def _sample(item: Any, what: str) -> tuple[np.ndarray, int | None]:
    """One (image C,H,W or H,W, label) from a torch Dataset item."""
    image, label = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) >= 2 else (item, None)
    x = _array(image)
    if x is None:
        raise DataSpecError(f"{what} yields a {type(image).__name__}; an item must be an image (tensor, array, "
                            "PIL image) or (image, label)")
    if x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] in _CHANNELS and x.shape[0] not in _CHANNELS:
        x = x.transpose(2, 0, 1)
    elif x.dtype != np.uint8 and x.ndim != 3:
        raise DataSpecError(f"{what}: a float image must be C,H,W and already preprocessed, got shape {x.shape}")
    if label is None:
        return x, None
    as_array = _array(label)
    return x, int(as_array.item() if as_array is not None else label)


def _stack(images: list[np.ndarray], labels: list[int | None], what: str) -> Batch:
    same = all(im.shape == images[0].shape and im.dtype == images[0].dtype for im in images)
    if same:
        x: np.ndarray | list[np.ndarray] = _images(np.stack(images), what)
    elif all(im.dtype == np.uint8 for im in images):
        x = images  # raw images of several sizes: the model's preprocessing resizes each
    else:
        raise DataSpecError(f"{what}: preprocessed (float) images differ in shape; preprocess them to one size")
    if any(lab is None for lab in labels):
        return x, None
    return x, np.asarray(labels, dtype=np.int64)


@dataclass
class Stream:
    """A source read as it comes: a torch Dataset (items, batched here) or an iterable of batches."""

    source: Any
    name: str
    items: bool  # a torch Dataset: one image (and label) per item

    @property
    def size(self) -> int | None:
        """Items of a map-style torch Dataset (random access), else None."""
        if self.items and hasattr(self.source, "__getitem__") and hasattr(self.source, "__len__"):
            return len(self.source)
        return None

    def batches(self, batch_size: int, indices: np.ndarray | None = None) -> Iterator[Batch]:
        """``(images, labels or None)`` batches, in order (of ``indices`` where given)."""
        if not self.items:
            for item in self.source:
                yield _batch(item, self.name)
            return
        size = self.size
        keys: Iterable[Any] = indices if indices is not None else (range(size) if size is not None else ())
        items = (self.source[int(i)] for i in keys) if size is not None else iter(self.source)
        images: list[np.ndarray] = []
        labels: list[int | None] = []
        for item in items:
            x, y = _sample(item, self.name)
            images.append(x)
            labels.append(y)
            if len(images) == batch_size:
                yield _stack(images, labels, self.name)
                images, labels = [], []
        if images:
            yield _stack(images, labels, self.name)


def array_batches(dataset: Dataset, batch_size: int) -> Iterator[Batch]:
    """An in-memory Dataset of uint8 images as ``(images, labels)`` batches, views of its arrays."""
    assert dataset.images is not None
    for start in range(0, len(dataset), batch_size):
        yield dataset.images[start:start + batch_size], dataset.labels[start:start + batch_size]


def resolve(data: DataLike, what: str) -> str | tuple[Dataset, bool] | Stream:
    """A DATA spec (as text), ``(Dataset over the arrays, labelled)``, or a :class:`Stream`."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    pair = _pair(data) if isinstance(data, tuple) else None
    whole = _array(data) if pair is None else None
    if pair is not None or (whole is not None and whole.ndim >= 3):
        x = _images(pair[0] if pair is not None else whole, what)  # type: ignore[arg-type]
        labelled = pair is not None
        y = _labels(pair[1], len(x), what) if pair is not None else np.zeros(len(x), dtype=np.int64)
        name = f"{what} ({type(data[0] if pair else data).__name__} of {len(x)} images)"
        if len(x) == 0:
            raise DataSpecError(f"{what} holds no images; give a data set with images")
        if x.dtype == np.uint8:
            return Dataset(name=name, labels=y, images=x), labelled
        return Dataset(name=name, labels=y, tensors=x), labelled
    if _torch_type(data, "utils.data.DataLoader"):
        return Stream(data, f"{what} (DataLoader)", items=False)
    if _torch_type(data, "utils.data.Dataset") or _torch_type(data, "utils.data.IterableDataset"):
        return Stream(data, f"{what} ({type(data).__name__})", items=True)
    if isinstance(data, Iterable) and not isinstance(data, (bytes, dict)):
        return Stream(data, f"{what} ({type(data).__name__} of batches)", items=False)
    raise DataSpecError(f"{what} is a {type(data).__name__}; give a DATA spec, an array, (images, labels), a torch "
                        "Dataset or DataLoader, or an iterable of batches")


def materialize(stream: Stream, preprocess: Callable[[], Preprocess], *, limit: int | None, seed: int | None,
                batch_size: int = 64) -> tuple[Dataset, bool]:
    """The first ``limit`` images of ``stream`` (of a torch Dataset, with a ``seed``: ``limit``
    indices chosen at random) preprocessed for the model, in memory: ``(Dataset, labelled)``."""
    size = stream.size
    indices = None
    if seed is not None and size is not None and limit is not None and limit < size:
        indices = np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray | None] = []
    count = 0
    for x, y in stream.batches(batch_size, indices):
        keep = len(x) if limit is None else min(len(x), limit - count)
        part = x[:keep]
        tensors = part if isinstance(part, np.ndarray) and part.dtype == np.float32 else preprocess().apply(part)
        xs.append(np.ascontiguousarray(tensors, dtype=np.float32))
        ys.append(None if y is None else y[:keep])
        count += keep
        if limit is not None and count >= limit:
            break
    if not xs:
        raise DataSpecError(f"{stream.name} yielded no images; give a data set with images")
    labelled = all(y is not None for y in ys)
    labels = np.concatenate([y if y is not None else np.zeros(len(x), np.int64) for x, y in zip(xs, ys, strict=True)])
    return Dataset(name=f"{stream.name}, {count} images", labels=labels, tensors=np.concatenate(xs)), labelled
