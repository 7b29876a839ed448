"""Models trained by the project itself, by seeded recipes, cached under ``$RESDEPLOY_CACHE``.

``fashion-resnet18`` (the demo model): torchvision ``resnet18(num_classes=10)`` on
Fashion-MNIST train, the 28x28 grey image resized to 32x32 and its channel repeated three
times, normalised with the training set's mean/std. Recipe (:class:`TrainingRecipe`): seed 0, 2 epochs,
batch 256, AdamW (weight decay 0.05) with a one-cycle learning rate peaking at 3e-3 (25%
warm-up), no augmentation (two epochs underfit rather than overfit), bfloat16 autocast and
channels-last on the CPU (about 1.5x faster than FP32 here; the saved weights are FP32). About
2 minutes 45 s on 2 cores; 90.7% top-1 on Fashion-MNIST test when measured; the test suite
asserts at least 88% (``tests/test_zoo.py``).

``fashion-resnet50``: the same data and recipe on torchvision ``resnet50(num_classes=10)``
(bottleneck blocks, 53 convolutions): the second model of ``benchmarks/fidelity.py``.

``fashion-resnet18-gray``: the same recipe on native Fashion-MNIST, as a user with a grey camera
trains it: 1 x 28 x 28 input (no resize, the channel not repeated), torchvision
``resnet18(num_classes=10)`` with ``conv1 = Conv2d(1, 64, 7, 2, 3, bias=False)``.

A cached model is retrained when its recipe changes or its file no longer matches the sha256
recorded when it was trained (a truncated or replaced cache is never used).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _io, _progress
from .errors import ModelSpecError
from .preprocess import Preprocess

if TYPE_CHECKING:
    import torch

__all__ = ["FASHION_GRAY_PREPROCESS", "FASHION_PREPROCESS", "ZOO", "TrainingRecipe", "ZooEntry", "load_zoo_model", "train", "zoo_path"]

log = logging.getLogger(__name__)

FASHION_PREPROCESS = Preprocess(input_size=32, mean=(0.2860,) * 3, std=(0.3530,) * 3)
FASHION_GRAY_PREPROCESS = Preprocess(input_size=28, mean=(0.2860,), std=(0.3530,), channels=1)


@dataclass(frozen=True)
class TrainingRecipe:
    arch: str = "resnet18"
    seed: int = 0
    epochs: int = 2
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    bf16: bool = True
    flip: bool = False
    threads: int | None = None
    in_channels: int = 3  # 1: conv1 = Conv2d(1, 64, 7, 2, 3, bias=False), fed the grey image as it is


@dataclass(frozen=True)
class ZooEntry:
    description: str
    recipe: TrainingRecipe
    minutes: int  # training time on 2 cores, for the log line
    num_classes: int = 10
    preprocess: Preprocess = FASHION_PREPROCESS


ZOO = {
    "fashion-resnet18": ZooEntry("torchvision resnet18(num_classes=10), Fashion-MNIST, 3x32x32", TrainingRecipe(), 3),
    "fashion-resnet50": ZooEntry("torchvision resnet50(num_classes=10), Fashion-MNIST, 3x32x32",
                                 TrainingRecipe(arch="resnet50"), 15),
    "fashion-resnet18-gray": ZooEntry("torchvision resnet18(num_classes=10) with a 1-channel conv1, native "
                                      "Fashion-MNIST, 1x28x28", TrainingRecipe(in_channels=1), 3,
                                      preprocess=FASHION_GRAY_PREPROCESS),
}


def zoo_path(name: str) -> Path:
    return _io.cache_dir() / "zoo" / f"{name}.pth"


def load_zoo_model(name: str) -> tuple[torch.nn.Module, Preprocess, int]:
    """The cached model (training it first if needed), its preprocessing and class count."""
    import torch

    entry = ZOO.get(name)
    if entry is None:
        raise ModelSpecError(f"unknown zoo model zoo:{name}; available: {', '.join('zoo:' + k for k in ZOO)}")
    path = zoo_path(name)
    with _io.FileLock(path.with_suffix(".lock"), what=f"training zoo:{name}", wait=True):
        if not _cache_is_valid(path, entry.recipe):
            log.info("zoo:%s is not cached (or its recipe or file changed); training it (about %d minutes on "
                     "2 cores)", name, entry.minutes)
            train(path, entry.recipe, name)
    model = _architecture(entry.recipe, entry.num_classes)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), entry.preprocess, entry.num_classes


def _architecture(recipe: TrainingRecipe, num_classes: int) -> torch.nn.Module:
    """torchvision's ``recipe.arch``; for a grey recipe its conv1 reads one channel, as users make it."""
    import torch
    import torchvision

    model = getattr(torchvision.models, recipe.arch)(num_classes=num_classes)
    if recipe.in_channels != 3:
        model.conv1 = torch.nn.Conv2d(recipe.in_channels, 64, 7, 2, 3, bias=False)
    return model


def _cache_is_valid(path: Path, recipe: TrainingRecipe) -> bool:
    info = path.with_suffix(".json")
    if not path.is_file() or not info.is_file():
        return False
    try:
        recorded = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    # A recipe field added later is absent from older records: there it had its default.
    defaults = asdict(TrainingRecipe())
    if not isinstance(recorded, dict) or any(recorded.get(k, defaults[k]) != v for k, v in asdict(recipe).items()):
        return False
    if recorded.get("sha256") != _io.sha256_file(path):
        log.warning("cached %s does not match the sha256 recorded when it was trained; retraining", path)
        return False
    return True


def _optimizer(model: torch.nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    import torch

    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay
    )


def _steps(recipe: TrainingRecipe, n: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    import torch

    steps_per_epoch = n // recipe.batch_size
    for _ in range(recipe.epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            yield perm[s * recipe.batch_size : (s + 1) * recipe.batch_size]


def _fit(model: torch.nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, recipe: TrainingRecipe, desc: str) -> float:
    """The training loop; returns the last loss."""
    import torch

    opt = _optimizer(model, recipe)
    total = recipe.epochs * (len(y_all) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.25)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    loss_value = float("nan")
    for idx in _progress.track(_steps(recipe, len(y_all), gen), total=total, desc=desc, unit="step"):
        xb = x_all[idx]
        if recipe.flip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        xb = xb.expand(-1, recipe.in_channels, -1, -1).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
            loss = loss_fn(model(xb), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
    return loss_value


def train(out: Path, recipe: TrainingRecipe = TrainingRecipe(), name: str = "fashion-resnet18") -> dict[str, Any]:
    """Train by the seeded recipe and save the FP32 state_dict and its record atomically."""
    import torch

    from .data import load_dataset

    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    data = load_dataset("fashion-mnist:train")
    assert data.images is not None
    pre = ZOO[name].preprocess if name in ZOO else FASHION_PREPROCESS
    # Preprocess once (single channel; expanded to the model's channels per batch to save memory).
    grey = replace(pre, channels=1, mean=pre.mean[:1], std=pre.std[:1])
    x_all = torch.from_numpy(grey.apply(data.images))
    y_all = torch.from_numpy(data.labels)
    model = _architecture(recipe, 10).to(memory_format=torch.channels_last)
    start = time.perf_counter()
    loss = _fit(model, x_all, y_all, recipe, f"train zoo:{name}")
    seconds = time.perf_counter() - start
    model = model.to(memory_format=torch.contiguous_format).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with _io.atomic_path(out) as tmp:
        torch.save(model.state_dict(), tmp)
    info = {"seconds": round(seconds, 1), "final_loss": round(loss, 4), "sha256": _io.sha256_file(out),
            **asdict(recipe)}
    _io.write_json(out.with_suffix(".json"), info)
    log.info("trained zoo:%s in %.0f s, saved to %s", name, seconds, out)
    return info

