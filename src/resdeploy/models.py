"""MODEL specs: a torchvision ResNet-family builder, ``zoo:NAME``, a TorchScript or pickled
module file, or ``package.module:factory``. Each resolves to a :class:`LoadedModel`: an
eval-mode ``torch.nn.Module`` together with the :class:`Preprocess` it expects.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelSpecError
from .preprocess import IMAGENET, Preprocess

if TYPE_CHECKING:
    import torch

__all__ = ["RESNET_BUILDERS", "LoadedModel", "ModelSpec", "load_model"]

log = logging.getLogger(__name__)

RESNET_BUILDERS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)

# Random-weight builders are seeded so that an export and its FP32 reference match.
_INIT_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """A MODEL spec and its options, as given on the command line."""

    spec: str
    weights: str | None = None
    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes <= 0:
            raise ModelSpecError(f"--num-classes must be positive, got {self.num_classes}")

    def to_metadata(self) -> dict[str, str]:
        """Enough to rebuild this FP32 model as the reference of later stages."""
        meta = {"resdeploy.source": self.spec}
        if self.weights:
            w = self.weights
            meta["resdeploy.weights"] = str(Path(w).resolve()) if _looks_like_path(w) else w
        return meta


@dataclass
class LoadedModel:
    module: torch.nn.Module
    preprocess: Preprocess
    num_classes: int
    spec: ModelSpec
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith((".pth", ".pt", ".bin", ".ckpt", ".ts", ".jit")) or Path(text).exists()


def _override(pre: Preprocess, spec: ModelSpec) -> Preprocess:
    if spec.input_size is None and spec.mean is None and spec.std is None:
        return pre
    size = spec.input_size or pre.input_size
    resize = pre.resize_size
    if spec.input_size is not None:
        # Keep torchvision's crop ratio for ImageNet-style preprocessing; plain resize otherwise.
        resize = None if pre.resize_size is None else round(spec.input_size * pre.resize_size / pre.input_size)
    return Preprocess(
        input_size=size,
        mean=spec.mean or pre.mean,
        std=spec.std or pre.std,
        resize_size=resize,
        interpolation=pre.interpolation,
    )


def _state_dict_from_file(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise ModelSpecError(f"weights file {path} not found; check the --weights path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelSpecError(
            f"cannot read weights file {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "pass a state_dict saved with torch.save(model.state_dict(), PATH)"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ModelSpecError(f"{path} does not hold a state_dict of tensors; save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_builder(spec: ModelSpec) -> LoadedModel:
    import torch
    import torchvision

    name = spec.spec
    builder = getattr(torchvision.models, name)
    weights = spec.weights
    if weights and not _looks_like_path(weights):
        try:
            enum = torchvision.models.get_model_weights(name)[weights]
        except KeyError:
            options = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
            raise ModelSpecError(
                f"{name} has no weights {weights!r}; use one of {options} or a path to a state_dict .pth"
            ) from None
        categories = len(enum.meta.get("categories", [])) or 1000
        if spec.num_classes not in (None, categories):
            raise ModelSpecError(
                f"{name} {weights} has {categories} classes but --num-classes is {spec.num_classes}; "
                "drop --num-classes, or fine-tune and pass the checkpoint as --weights PATH"
            )
        try:
            module = builder(weights=enum)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise ModelSpecError(
                f"cannot download {name} {weights} weights ({type(exc).__name__}: no network?); "
                f"download {enum.url} elsewhere and pass it as --weights PATH"
            ) from None
        t = enum.transforms()
        pre = Preprocess(
            input_size=int(t.crop_size[0]),
            mean=tuple(t.mean),  # type: ignore[arg-type]
            std=tuple(t.std),  # type: ignore[arg-type]
            resize_size=int(t.resize_size[0]),
            interpolation=str(t.interpolation.value),
        )
        return LoadedModel(module.eval(), _override(pre, spec), categories, spec, f"{name} ({weights})")

    state = _state_dict_from_file(Path(weights)) if weights else None
    num_classes = spec.num_classes
    if state is not None:
        fc = state.get("fc.weight")
        if fc is None:
            raise ModelSpecError(f"{weights} has no fc.weight; it is not a {name} state_dict")
        found = int(fc.shape[0])
        if num_classes is not None and num_classes != found:
            raise ModelSpecError(
                f"{weights} has {found} classes (fc.weight is {tuple(fc.shape)}) but --num-classes is "
                f"{num_classes}; pass --num-classes {found} or the matching checkpoint"
            )
        num_classes = found
    num_classes = num_classes or 1000
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        module = builder(num_classes=num_classes)
    if state is not None:
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise ModelSpecError(
                f"{weights} does not fit {name}: {first[:160]}; check the architecture name"
            ) from None
    desc = f"{name} ({weights or 'random init, seed 0'})"
    return LoadedModel(module.eval(), _override(IMAGENET, spec), num_classes, spec, desc)


def _num_classes_of(module: torch.nn.Module, pre: Preprocess) -> int:
    import torch

    with torch.no_grad():
        out = module(torch.zeros(1, *pre.input_shape))
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not hasattr(out, "ndim") or out.ndim != 2:
        raise ModelSpecError("the model must return logits of shape (N, classes) for an (N,3,H,W) input")
    return int(out.shape[1])


def _load_module_file(spec: ModelSpec) -> LoadedModel:
    import torch

    path = Path(spec.spec)
    module: Any
    try:
        module = torch.jit.load(str(path), map_location="cpu")
        kind = "TorchScript"
    except Exception:  # noqa: BLE001 - not TorchScript: try a pickled module next
        try:
            module = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise ModelSpecError(
                f"cannot load {path} as TorchScript or a pickled module ({type(exc).__name__}); "
                "save it with torch.jit.save or torch.save(model, PATH)"
            ) from None
        kind = "pickled module"
    if isinstance(module, dict):
        raise ModelSpecError(
            f"{path} holds a state_dict, not a module; name the architecture: e.g. resnet50 --weights {path}"
        )
    if not isinstance(module, torch.nn.Module):
        raise ModelSpecError(f"{path} holds a {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    pre = _override(IMAGENET, spec)
    n = _num_classes_of(module, pre)
    return LoadedModel(module, pre, n, spec, f"{kind} {path.name}")


def _load_factory(spec: ModelSpec) -> LoadedModel:
    import torch

    mod_name, _, attr = spec.spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelSpecError(
            f"cannot import {spec.spec} ({exc}); make the module importable (PYTHONPATH) and check the name"
        ) from None
    kwargs: dict[str, Any] = {}
    if spec.num_classes is not None:
        try:
            if "num_classes" in inspect.signature(factory).parameters:
                kwargs["num_classes"] = spec.num_classes
        except (TypeError, ValueError):
            pass
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        module = factory(**kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ModelSpecError(f"{spec.spec} returned a {type(module).__name__}, not a torch.nn.Module")
    if spec.weights:
        state = _state_dict_from_file(Path(spec.weights))
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelSpecError(f"{spec.weights} does not fit {spec.spec}: {str(exc).splitlines()[0]}") from None
    module.eval()
    pre = _override(IMAGENET, spec)
    return LoadedModel(module, pre, _num_classes_of(module, pre), spec, f"factory {spec.spec}")


def load_model(spec: ModelSpec | str) -> LoadedModel:
    """Resolve a MODEL spec to an eval-mode module and its preprocessing."""
    if isinstance(spec, str):
        spec = ModelSpec(spec)
    text = spec.spec
    if text.startswith("zoo:"):
        from .zoo import load_zoo_model

        if spec.weights:
            raise ModelSpecError("zoo models bring their own weights; drop --weights")
        module, pre = load_zoo_model(text[4:])
        if spec.num_classes not in (None, 10):
            raise ModelSpecError(f"{text} has 10 classes; drop --num-classes")
        return LoadedModel(module, _override(pre, spec), 10, spec, text)
    if text in RESNET_BUILDERS:
        return _load_builder(spec)
    if ":" in text and not Path(text).exists():
        return _load_factory(spec)
    if Path(text).is_file():
        if spec.weights:
            raise ModelSpecError(f"{text} is a module file with its own weights; drop --weights")
        return _load_module_file(spec)
    close = [b for b in RESNET_BUILDERS if b.startswith(text[:6])] or list(RESNET_BUILDERS[:5])
    raise ModelSpecError(
        f"unknown model {text!r}: not a ResNet builder, zoo:NAME, a file or package.module:factory; "
        f"try {', '.join(close)}"
    )
