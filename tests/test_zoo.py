"""zoo:fashion-resnet18 meets its documented accuracy (trains on first use on a machine)."""

from __future__ import annotations

from .conftest import zoo_torch_top1


def test_fashion_resnet18_reaches_88_percent_on_all_test_images() -> None:
    top1 = zoo_torch_top1()
    assert top1 >= 0.88, top1
