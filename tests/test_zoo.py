"""The zoo models meet their documented accuracy (each trains on first use on a machine)."""

from __future__ import annotations

from .conftest import zoo_torch_top1


def test_fashion_resnet18_reaches_88_percent_on_all_test_images() -> None:
    top1 = zoo_torch_top1()
    assert top1 >= 0.88, top1


def test_fashion_resnet18_gray_reads_native_fashion_mnist_and_reaches_88_percent() -> None:
    """One channel, 28 x 28, no resize: the grey images as they are."""
    import torch

    from resdeploy.data import load_dataset
    from resdeploy.models import load_model

    loaded = load_model("zoo:fashion-resnet18-gray")
    assert loaded.preprocess.input_shape == (1, 28, 28) and loaded.module.conv1.in_channels == 1
    test = load_dataset("fashion-mnist:test")
    correct = 0
    with torch.no_grad():
        for x, y in test.batches(loaded.preprocess, 1000):
            correct += int((loaded.module(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    assert correct / len(test) >= 0.88, correct / len(test)
