"""Preprocessing that travels with the model (torchvision ``Weights.transforms()`` style).

One :class:`Preprocess` describes how raw images become the model's input; it is written into
the ONNX metadata at export, read back by every later stage, and applied identically to
calibration and evaluation data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import DataSpecError, UsageError

__all__ = ["IMAGENET", "GivenPreprocess", "Preprocess", "parse_channel_values", "parse_size", "parse_triplet"]

_META_PREFIX = "resdeploy."


# torchvision's ImageNet mean/std; a model with another channel count gets their averages per channel.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _side_pair(size: int | Sequence[int], what: str = "input size") -> tuple[int, int]:
    """``S`` or ``(H, W)`` as ``(H, W)``."""
    if isinstance(size, bool):
        raise UsageError(f"{what} must be S or H,W in pixels, got {size!r}")
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        h, w = int(size[0]), int(size[1])
    else:
        raise UsageError(f"{what} must be S or H,W in pixels, got {size!r}")
    if h <= 0 or w <= 0:
        raise UsageError(f"{what} must be positive, got {size!r}")
    return h, w


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the model's (N, C, H, W) input, as torchvision's transforms do it:
    convert to ``channels`` (PIL's ``convert("L")`` for one, ``convert("RGB")`` for three),
    resize (shorter side to ``resize_size``, then centre crop to H x W; or straight to H x W
    when ``resize_size`` is None), scale to [0, 1], normalise per channel.

    ``input_size`` is ``S`` (square) or ``(H, W)``; a square ``(S, S)`` is kept as ``S``.
    ``mean``/``std`` have one value per channel (one value is repeated for every channel)."""

    input_size: int | tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int | None = None
    interpolation: str = "bilinear"
    channels: int = 3

    def __post_init__(self) -> None:
        h, w = _side_pair(self.input_size)
        object.__setattr__(self, "input_size", h if h == w else (h, w))
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise UsageError(f"the channel count must be a positive integer, got {self.channels!r}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) == 1 and self.channels > 1:
                values = values * self.channels
            if len(values) != self.channels:
                raise UsageError(
                    f"{name} has {len(values)} values but the model takes {self.channels} channel"
                    f"{'s' if self.channels != 1 else ''}; give one value per channel (or one for all)"
                )
            object.__setattr__(self, name, values)
        if any(s <= 0 for s in self.std):
            raise UsageError(f"std values must be positive, got {self.std}")
        if self.resize_size is not None and (isinstance(self.resize_size, bool) or self.resize_size <= 0):
            raise UsageError(f"resize size must be positive, got {self.resize_size}")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise UsageError(f"unknown interpolation {self.interpolation!r}; use bilinear, bicubic or nearest")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the model's input."""
        return _side_pair(self.input_size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w = self.size
        return (self.channels, h, w)

    def to_metadata(self) -> dict[str, str]:
        return {
            f"{_META_PREFIX}input_size": json.dumps(list(self.input_shape)),
            f"{_META_PREFIX}mean": json.dumps(list(self.mean)),
            f"{_META_PREFIX}std": json.dumps(list(self.std)),
            f"{_META_PREFIX}resize_size": json.dumps(self.resize_size),
            f"{_META_PREFIX}interpolation": self.interpolation,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, as a bundle records it; :meth:`from_dict` reads it (and older bundles' square sizes)."""
        return {"input_size": self.input_size if isinstance(self.input_size, int) else list(self.input_size),
                "channels": self.channels, "mean": list(self.mean), "std": list(self.std),
                "resize_size": self.resize_size, "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        size = d["input_size"]
        mean = tuple(float(v) for v in d["mean"])
        return cls(input_size=tuple(size) if isinstance(size, list) else size, mean=mean,
                   std=tuple(float(v) for v in d["std"]), resize_size=d.get("resize_size"),
                   interpolation=d.get("interpolation", "bilinear"), channels=int(d.get("channels", len(mean))))

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> Preprocess | None:
        """Read back what :meth:`to_metadata` wrote (``[C, H, W]``; older files wrote ``[3, S, S]``);
        None when the keys are absent."""
        try:
            size = json.loads(props[f"{_META_PREFIX}input_size"])
            mean = json.loads(props[f"{_META_PREFIX}mean"])
            std = json.loads(props[f"{_META_PREFIX}std"])
        except KeyError:
            return None
        except ValueError as exc:
            raise UsageError(f"the model's resdeploy preprocessing metadata is unreadable ({exc}); export it again") from exc
        resize = json.loads(props.get(f"{_META_PREFIX}resize_size", "null"))
        try:
            if isinstance(size, list) and len(size) == 3:
                channels, hw = int(size[0]), (int(size[1]), int(size[2]))
            else:
                channels, hw = len(mean), (int(size[-1]),) * 2 if isinstance(size, list) else (int(size),) * 2
            return cls(
                input_size=hw,
                mean=tuple(float(v) for v in mean),
                std=tuple(float(v) for v in std),
                resize_size=resize,
                interpolation=props.get(f"{_META_PREFIX}interpolation", "bilinear"),
                channels=channels,
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise UsageError(f"the model's resdeploy preprocessing metadata is malformed ({exc}); export it again") from exc

    def _to_channels(self, t: Any) -> Any:
        """uint8 (N, C, H, W) -> (N, self.channels, H, W) as PIL converts: grey repeated for RGB,
        alpha dropped, RGB to luma with ``convert("L")``'s integer weights."""
        import torch

        c = t.shape[1]
        if c == self.channels:
            return t
        if self.channels == 3 and c == 1:
            return t.expand(-1, 3, -1, -1)
        if self.channels == 3 and c == 4:
            return t[:, :3]
        if self.channels == 1 and c in (3, 4):
            rgb = t[:, :3].to(torch.int32)
            luma = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16  # PIL's ITU-R 601-2
            return luma.to(torch.uint8).unsqueeze(1)
        raise DataSpecError(
            f"the model takes {self.channels} channels and these images have {c}; resdeploy converts images to 1 "
            f"(grey) or 3 (RGB) channels only: give the data as an .npz of preprocessed (N, {self.channels}, H, W) arrays"
        )

    def resize(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images (N,H,W), (N,C,H,W) or a list of (C,H,W) of any size -> uint8 (N,C,H,W) at
        the model's channels and size: the geometric part (resize, centre crop), done on uint8
        exactly as torchvision does."""
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = {
            "bilinear": InterpolationMode.BILINEAR,
            "bicubic": InterpolationMode.BICUBIC,
            "nearest": InterpolationMode.NEAREST,
        }[self.interpolation]
        size = list(self.size)

        def one_size(t: torch.Tensor) -> torch.Tensor:
            if t.ndim == 3:
                t = t.unsqueeze(1)
            t = self._to_channels(t)
            if self.resize_size is None:
                if list(t.shape[-2:]) != size:
                    t = F.resize(t, size, interpolation=mode, antialias=True)
            else:
                t = F.resize(t, [self.resize_size], interpolation=mode, antialias=True)
                t = F.center_crop(t, size)
            return t

        if isinstance(images, np.ndarray):
            return np.ascontiguousarray(one_size(torch.from_numpy(np.ascontiguousarray(images))).numpy())
        return np.concatenate([one_size(torch.from_numpy(np.ascontiguousarray(im))[None]).numpy() for im in images])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N,C,H,W) from :meth:`resize` -> float32: scale to [0, 1], then per-channel mean/std."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        x = images.astype(np.float32)
        x /= np.float32(255.0)
        x -= mean
        x /= std
        return x

    def apply(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 images of any size -> the model's float32 (N,C,H,W) input."""
        return self.normalize(self.resize(images))

    def with_channels(self, channels: int) -> Preprocess:
        """The same transform for a model of ``channels`` channels; ImageNet's three-value mean/std
        become their averages for another count (what a grey or multi-band model gets by default)."""
        if channels == self.channels:
            return self
        mean, std = self.mean, self.std
        if len(set(mean)) > 1 or len(set(std)) > 1:
            if (mean, std) != (_IMAGENET_MEAN, _IMAGENET_STD):
                raise UsageError(
                    f"the model takes {channels} channel{'s' if channels != 1 else ''} but the mean/std given have "
                    f"{len(mean)} values; give --mean/--std with one value per channel (or one for all)"
                )
            mean, std = (round(sum(mean) / len(mean), 4),), (round(sum(std) / len(std), 4),)
        return replace(self, mean=mean[:1], std=std[:1], channels=channels)


@dataclass(frozen=True)
class GivenPreprocess:
    """``--input-size/--mean/--std`` as given for an ONNX from another tool, which carries no
    resdeploy metadata: the channel count and H x W come from its input, the rest from here."""

    input_size: int | tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.input_size is not None:
            object.__setattr__(self, "input_size", parse_size(self.input_size))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                object.__setattr__(self, name, (float(value),))
            elif value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.input_size, self.mean, self.std))

    def for_input(self, shape: Sequence[int], what: str) -> Preprocess:
        """The preprocessing of a model whose input is (C, H, W) ``shape``: resize to H x W,
        normalise with the given mean/std (one value per channel, or one for all)."""
        c, h, w = (int(d) for d in shape[-3:])
        if self.mean is None or self.std is None:
            raise UsageError(
                f"{what} carries no resdeploy preprocessing metadata; say how its {c} x {h} x {w} input is made: "
                f"--mean and --std (one value per channel{', R,G,B' if c == 3 else ''}), and --input-size if you like"
            )
        if self.input_size is not None and _side_pair(self.input_size) != (h, w):
            raise UsageError(f"--input-size {self.input_size} does not match {what}'s input, {h} x {w} (H x W); "
                             f"drop it or give {h},{w}")
        return Preprocess(input_size=(h, w), mean=self.mean, std=self.std, channels=c)

    def check(self, pre: Preprocess, what: str) -> None:
        """Flags given for a model that carries its own preprocessing must agree with it."""
        if not self:
            return
        given = replace(pre, input_size=self.input_size if self.input_size is not None else pre.input_size,
                        mean=self.mean or pre.mean, std=self.std or pre.std)
        if given != pre:
            raise UsageError(f"{what} carries its own preprocessing ({pre.input_shape}, mean {list(pre.mean)}, std "
                             f"{list(pre.std)}); drop --input-size/--mean/--std, which say otherwise")


IMAGENET = Preprocess(
    input_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_size=256
)


def parse_channel_values(text: str, what: str) -> tuple[float, ...]:
    """``--mean``/``--std``: one value per channel (``R,G,B``, a single ``V`` for grey, or one value
    repeated for every channel)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--{what} {text!r} is not a list of numbers; write one value per channel, e.g. "
                         "0.485,0.456,0.406 (RGB) or 0.286 (grey)") from None
    return values


def parse_triplet(text: str, what: str) -> tuple[float, float, float]:
    """Parse ``R,G,B`` (a single value is repeated)."""
    values: Sequence[float] = parse_channel_values(text, what)
    if len(values) == 1:
        values = [values[0]] * 3
    if len(values) != 3:
        raise UsageError(f"--{what} needs 3 values (R,G,B), got {len(values)}")
    return (values[0], values[1], values[2])


def parse_size(value: Any, what: str = "--input-size") -> int | tuple[int, int]:
    """An input size as flags and TOML give it: ``224``, ``"224"``, ``"224,160"`` / ``"224x160"``
    (H,W) or ``[224, 160]``; a square ``(S, S)`` is ``S``."""
    items: Any = value
    if isinstance(value, str):
        try:
            items = [int(v.strip()) for v in value.replace("x", ",").split(",")]
        except ValueError:
            raise UsageError(f"{what} {value!r} is not S or H,W in pixels (e.g. 224 or 224,160)") from None
        if len(items) == 1:
            items = items[0]
    elif isinstance(value, list):
        items = tuple(value)
    h, w = _side_pair(items, what)
    return h if h == w else (h, w)
