"""Preprocessing that travels with the model (torchvision ``Weights.transforms()`` style).

One :class:`Preprocess` describes how raw images become the model's input; it is written into
the ONNX metadata at export, read back by every later stage, and applied identically to
calibration and evaluation data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

__all__ = ["IMAGENET", "Preprocess", "parse_triplet"]

_META_PREFIX = "resdeploy."


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side to ``resize_size``, then centre crop) or resize to the square
    ``input_size`` when ``resize_size`` is None; scale to [0, 1]; normalise per channel."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_size: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.input_size <= 0:
            raise UsageError(f"input size must be positive, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UsageError("mean and std need three values (R,G,B)")
        if any(s <= 0 for s in self.std):
            raise UsageError(f"std values must be positive, got {self.std}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise UsageError(f"unknown interpolation {self.interpolation!r}; use bilinear, bicubic or nearest")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.input_size, self.input_size)

    def to_metadata(self) -> dict[str, str]:
        return {
            f"{_META_PREFIX}input_size": json.dumps([3, self.input_size, self.input_size]),
            f"{_META_PREFIX}mean": json.dumps(list(self.mean)),
            f"{_META_PREFIX}std": json.dumps(list(self.std)),
            f"{_META_PREFIX}resize_size": json.dumps(self.resize_size),
            f"{_META_PREFIX}interpolation": self.interpolation,
        }

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> Preprocess | None:
        """Read back what :meth:`to_metadata` wrote; None when the keys are absent."""
        try:
            size = json.loads(props[f"{_META_PREFIX}input_size"])
            mean = json.loads(props[f"{_META_PREFIX}mean"])
            std = json.loads(props[f"{_META_PREFIX}std"])
        except KeyError:
            return None
        resize = json.loads(props.get(f"{_META_PREFIX}resize_size", "null"))
        side = int(size[-1]) if isinstance(size, list) else int(size)
        return cls(
            input_size=side,
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
            resize_size=resize,
            interpolation=props.get(f"{_META_PREFIX}interpolation", "bilinear"),
        )

    def resize(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images (N,H,W), (N,C,H,W) or a list of (C,H,W) of any size -> uint8 (N,3,S,S):
        the geometric part (resize, centre crop), done on uint8 exactly as torchvision does."""
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = {
            "bilinear": InterpolationMode.BILINEAR,
            "bicubic": InterpolationMode.BICUBIC,
            "nearest": InterpolationMode.NEAREST,
        }[self.interpolation]

        def one_size(t: torch.Tensor) -> torch.Tensor:
            if t.ndim == 3:
                t = t.unsqueeze(1)
            if t.shape[1] == 1:
                t = t.expand(-1, 3, -1, -1)
            elif t.shape[1] == 4:
                t = t[:, :3]
            if self.resize_size is None:
                if tuple(t.shape[-2:]) != (self.input_size, self.input_size):
                    t = F.resize(t, [self.input_size, self.input_size], interpolation=mode, antialias=True)
            else:
                t = F.resize(t, [self.resize_size], interpolation=mode, antialias=True)
                t = F.center_crop(t, [self.input_size, self.input_size])
            return t

        if isinstance(images, np.ndarray):
            return np.ascontiguousarray(one_size(torch.from_numpy(np.ascontiguousarray(images))).numpy())
        return np.concatenate([one_size(torch.from_numpy(np.ascontiguousarray(im))[None]).numpy() for im in images])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N,3,S,S) from :meth:`resize` -> float32: scale to [0, 1], then per-channel mean/std."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, 3, 1, 1)
        x = images.astype(np.float32)
        x /= np.float32(255.0)
        x -= mean
        x /= std
        return x

    def apply(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images of any size -> the model's float32 (N,3,S,S) input."""
        return self.normalize(self.resize(images))


IMAGENET = Preprocess(
    input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_size=256
)


def parse_triplet(text: str, what: str) -> tuple[float, float, float]:
    """Parse ``R,G,B`` (a single value is repeated)."""
    try:
        values: Sequence[float] = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--{what} {text!r} is not a list of numbers; write it as R,G,B") from None
    if len(values) == 1:
        values = [values[0]] * 3
    if len(values) != 3:
        raise UsageError(f"--{what} needs 3 values (R,G,B), got {len(values)}")
    return (values[0], values[1], values[2])
