"""zoo:fashion-resnet18 meets its documented accuracy (trains on first use on a machine)."""

from __future__ import annotations

import torch

from resdeploy.data import load_dataset
from resdeploy.models import load_model


def test_fashion_resnet18_reaches_88_percent_on_all_test_images() -> None:
    loaded = load_model("zoo:fashion-resnet18")
    test = load_dataset("fashion-mnist:test")
    correct = 0
    with torch.no_grad():
        for x, y in test.batches(loaded.preprocess, 500):
            correct += int((loaded.module(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    assert len(test) == 10_000
    assert correct / len(test) >= 0.88, correct / len(test)
