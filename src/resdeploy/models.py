"""MODEL specs: a torchvision ResNet-family builder, ``zoo:NAME``, a model file (TorchScript,
a ``torch.export`` program ``.pt2``, or, only with ``--trust-pickle``, a pickled module), or
``package.module:factory``. :func:`parse_model_spec` is the one parser of that grammar; each
spec resolves to a :class:`LoadedModel`: an eval-mode ``torch.nn.Module`` with the
:class:`Preprocess` it expects.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import urllib.error
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import ModelSpecError
from .preprocess import IMAGENET, Preprocess, parse_size

if TYPE_CHECKING:
    import torch

__all__ = ["RESNET_BUILDERS", "LoadedModel", "ModelSpec", "ParsedSpec", "file_format", "from_module", "load_model",
           "parse_model_spec"]

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
MODEL_SUFFIXES = (".pth", ".pt", ".pt2", ".bin", ".ckpt", ".ts", ".jit")

# Random-weight builders are seeded so that an export and its FP32 reference match.
_INIT_SEED = 0
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

PICKLE_HINT = (
    "save it in a format that cannot run code: torch.jit.save(torch.jit.script(model), 'model.ts'), "
    "torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), or torch.save(model.state_dict(), "
    "'model.pth') and name the architecture (resnet50 --weights model.pth)"
)


@dataclass(frozen=True)
class ParsedSpec:
    """Which kind of MODEL spec a text is: ``zoo``, ``builder``, ``file`` or ``factory``."""

    kind: Literal["zoo", "builder", "file", "factory"]
    name: str  # zoo name, builder name, file path or module:attr

    @property
    def path(self) -> Path | None:
        return Path(self.name) if self.kind == "file" else None

    @property
    def slug(self) -> str:
        """A file- and Triton-safe name: ``zoo:fashion-resnet18`` -> ``fashion-resnet18``."""
        stem = Path(self.name).stem if self.kind == "file" else self.name.replace(":", "-")
        return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem) or "model"


def looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith(MODEL_SUFFIXES)


def parse_model_spec(text: str) -> ParsedSpec:
    """The MODEL grammar, in one place; unknown or missing specs are a one-line error."""
    if text.startswith("zoo:"):
        return ParsedSpec("zoo", text[4:])
    if text in RESNET_BUILDERS:
        return ParsedSpec("builder", text)
    if Path(text).is_file():
        return ParsedSpec("file", text)
    if _FACTORY.fullmatch(text):
        return ParsedSpec("factory", text)
    if looks_like_path(text):
        raise ModelSpecError(f"model file {text} not found; check the path")
    close = [b for b in RESNET_BUILDERS if b.startswith(text[:6])] or list(RESNET_BUILDERS[:5])
    raise ModelSpecError(
        f"unknown model {text!r}: not a ResNet builder, zoo:NAME, a model file or package.module:factory; "
        f"try {', '.join(close)}"
    )


@dataclass(frozen=True)
class ModelSpec:
    """A MODEL spec and its options, as given on the command line."""

    spec: str
    weights: str | None = None
    num_classes: int | None = None
    input_size: int | tuple[int, int] | None = None  # S, or (H, W)
    mean: tuple[float, ...] | None = None  # one value per channel (or one for all)
    std: tuple[float, ...] | None = None
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes <= 0:
            raise ModelSpecError(f"--num-classes must be positive, got {self.num_classes}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", parse_size(self.input_size))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (int, float)):
                    value = (value,)
                if not value:
                    raise ModelSpecError(f"--{name} needs at least one value")
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @property
    def parsed(self) -> ParsedSpec:
        return parse_model_spec(self.spec)

    def to_metadata(self) -> dict[str, str]:
        """Enough to rebuild this FP32 model as the reference of later stages."""
        meta = {"resdeploy.source": self.spec} if self.spec else {}  # "": a module handed over in memory
        if self.weights:
            w = self.weights
            meta["resdeploy.weights"] = str(Path(w).resolve()) if looks_like_path(w) or Path(w).exists() else w
        return meta


@dataclass
class LoadedModel:
    module: torch.nn.Module
    preprocess: Preprocess
    num_classes: int
    spec: ModelSpec
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _override(pre: Preprocess, spec: ModelSpec, channels: int | None = None) -> Preprocess:
    """``pre`` with the spec's --input-size/--mean/--std, for a model of ``channels`` channels
    (default: ``pre``'s)."""
    channels = channels or pre.channels
    if spec.input_size is None and spec.mean is None and spec.std is None:
        return pre.with_channels(channels)
    size = spec.input_size if spec.input_size is not None else pre.input_size
    resize = pre.resize_size
    if spec.input_size is not None:
        # Keep torchvision's crop ratio for ImageNet-style preprocessing (resize the shorter side,
        # then centre-crop H x W: the resize must cover the longer side of the crop); plain resize otherwise.
        side = max(parse_size_pair(spec.input_size))
        resize = None if pre.resize_size is None else round(side * pre.resize_size / max(pre.size))
    base = pre if spec.mean is not None and spec.std is not None else pre.with_channels(channels)
    return Preprocess(
        input_size=size,
        mean=spec.mean or base.mean,
        std=spec.std or base.std,
        resize_size=resize,
        interpolation=pre.interpolation,
        channels=channels,
    )


def parse_size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def input_channels(module: torch.nn.Module) -> int | None:
    """The channel count the model reads: the first convolution's ``in_channels`` (from its
    weight: (out, in / groups, kh, kw)), or None when it has no 4-D weight to read it from."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            return int(m.in_channels)
    for _, p in module.named_parameters():  # TorchScript and torch.export modules: the first 4-D weight
        if p.ndim == 4:
            return int(p.shape[1])
    return None


def _state_dict_from_file(path: Path) -> dict[str, Any]:
    """A state_dict read with ``weights_only=True``: tensors and containers, never code."""
    import torch

    if not path.is_file():
        raise ModelSpecError(f"weights file {path} not found; check the --weights path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelSpecError(
            f"cannot read weights file {path} as a state_dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); pass one saved with torch.save(model.state_dict(), PATH)"
        ) from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise ModelSpecError(f"{path} does not hold a state_dict of tensors; save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _enum_builder(spec: ModelSpec, name: str, weights: str) -> LoadedModel:
    """A builder with torchvision weights (downloaded by torchvision; a clear error offline)."""
    import torchvision

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
        module = getattr(torchvision.models, name)(weights=enum)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise ModelSpecError(
            f"cannot download {name} {weights} weights ({type(exc).__name__}: no network?); "
            f"download {enum.url} elsewhere and pass it as --weights PATH"
        ) from exc
    t = enum.transforms()
    pre = Preprocess(
        input_size=int(t.crop_size[0]),
        mean=(float(t.mean[0]), float(t.mean[1]), float(t.mean[2])),
        std=(float(t.std[0]), float(t.std[1]), float(t.std[2])),
        resize_size=int(t.resize_size[0]),
        interpolation=str(t.interpolation.value),
    )
    return LoadedModel(module.eval(), _override(pre, spec), categories, spec, f"{name} ({weights})")


def _load_builder(spec: ModelSpec) -> LoadedModel:
    import torch
    import torchvision

    name, weights = spec.spec, spec.weights
    if weights and not (looks_like_path(weights) or Path(weights).exists()):
        return _enum_builder(spec, name, weights)
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        module = getattr(torchvision.models, name)(num_classes=num_classes or 1000)
    stem = state.get("conv1.weight") if state is not None else None
    if stem is not None and stem.ndim == 4 and int(stem.shape[1]) != module.conv1.in_channels:
        # A grey (or multi-band) model trained with conv1 = Conv2d(C, 64, 7, 2, 3, bias=False), as users build it.
        old = module.conv1
        module.conv1 = torch.nn.Conv2d(int(stem.shape[1]), old.out_channels, old.kernel_size, old.stride,  # type: ignore[arg-type]
                                       old.padding, bias=False)  # type: ignore[arg-type]
    if state is not None:
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            lines = str(exc).splitlines()
            first = lines[1].strip() if len(lines) > 1 else str(exc)
            raise ModelSpecError(f"{weights} does not fit {name}: {first[:160]}; check the architecture name") from exc
    desc = f"{name} ({weights or 'random init, seed 0'})"
    pre = _override(IMAGENET, spec, module.conv1.in_channels)
    return LoadedModel(module.eval(), pre, num_classes or 1000, spec, desc)


def _describe(out: Any) -> str:
    if isinstance(out, dict):
        return f"a dict with keys {sorted(map(str, out))[:5]}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} values"
    if hasattr(out, "shape"):
        return f"a tensor of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


def _forward(module: torch.nn.Module, shape: tuple[int, ...]) -> Any:
    import torch

    with torch.no_grad():
        return module(torch.zeros(shape))


def classifier_outputs(module: torch.nn.Module, pre: Preprocess) -> tuple[int, int | None]:
    """(classes, static batch or None), after checking the module is an image classifier: one
    (N, C, H, W) input in, one (N, classes) logits tensor out. A module that runs at batch 1 only
    (a ``torch.export`` program exported with a static batch) reports its static batch."""
    import torch

    shape: tuple[int, ...] = (2, *pre.input_shape)
    static = None
    try:
        out = _forward(module, shape)
    except Exception as exc:  # noqa: BLE001 - a user's forward can raise anything
        try:
            out, shape, static = _forward(module, (1, *pre.input_shape)), (1, *pre.input_shape), 1
        except Exception:  # noqa: BLE001 - report the first failure, at batch 2
            raise ModelSpecError(
                f"the model does not accept an input of shape {shape} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); resdeploy deploys classifiers of "
                "N x C x H x W images: check --input-size and the model's first convolution"
            ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != shape[0]:
        raise ModelSpecError(
            f"the model returns {_describe(out)} for an input of shape {shape}; resdeploy deploys classifiers "
            "that return one (N, classes) logits tensor: wrap the model so that forward returns only the logits"
        )
    return int(out.shape[1]), static


def file_format(path: Path) -> str:
    """``torchscript``, ``export`` (a ``torch.export`` program), ``pickle`` or ``unknown``: read from
    the zip's member names, without loading (and so without running) anything."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return "pickle" if path.suffix in (".pt", ".pth", ".bin", ".ckpt") else "unknown"
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith(("serialized_exported_program.json", "serialized_exported_program.bin")) or "/models/" in n
           for n in names) or path.suffix == ".pt2":
        return "export"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return "unknown"


def _torch_version() -> tuple[int, int]:
    import torch

    major, minor = (int("".join(c for c in p if c.isdigit()) or 0) for p in torch.__version__.split(".")[:2])
    return major, minor


def _exported(graph_module: Any) -> Any:
    """A ``torch.export`` program's module, wrapped so that ``eval()``/``train()`` (which it
    refuses: it is traced in its mode already) are no-ops for the ONNX exporter."""
    import torch

    class ExportedProgramModule(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.program = inner

        def forward(self, x: torch.Tensor) -> Any:
            return self.program(x)

        def train(self, mode: bool = True) -> ExportedProgramModule:
            return self

    return ExportedProgramModule(graph_module)


def _read_module_file(path: Path, trust_pickle: bool) -> tuple[Any, str]:
    import torch

    fmt = file_format(path)
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu"), "TorchScript"
    if fmt == "export":
        if _torch_version() < (2, 5):
            raise ModelSpecError(
                f"{path} is a torch.export program; turning one into ONNX needs torch 2.5 or newer (torch "
                f"{torch.__version__}'s exporter cannot translate its aten ops): save TorchScript or a state_dict instead"
            )
        return _exported(torch.export.load(str(path)).module()), "torch.export program"
    if fmt == "unknown":
        raise ModelSpecError(f"{path} is not a TorchScript, torch.export (.pt2) or torch.save file; {PICKLE_HINT}")
    try:  # a pickle: first as plain data (a state_dict is refused with a hint, below)
        return torch.load(path, map_location="cpu", weights_only=True), "state_dict"
    except Exception as exc:
        if not trust_pickle:
            raise ModelSpecError(
                f"{path} is a pickled module: loading it can run any code it contains; pass --trust-pickle "
                f"if you trust its source, or {PICKLE_HINT}"
            ) from exc
    log.warning("unpickling %s with --trust-pickle: it can run code", path)
    return torch.load(path, map_location="cpu", weights_only=False), "pickled module"


def _load_module_file(spec: ModelSpec) -> LoadedModel:
    import torch

    path = Path(spec.spec)
    if spec.weights:
        raise ModelSpecError(f"{path} is a module file with its own weights; drop --weights")
    try:
        module, kind = _read_module_file(path, spec.trust_pickle)
    except ModelSpecError:
        raise
    except Exception as exc:
        raise ModelSpecError(
            f"cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
            "save it with torch.jit.save or torch.export.save"
        ) from exc
    if isinstance(module, dict):
        raise ModelSpecError(
            f"{path} holds a state_dict, not a module; name the architecture: e.g. resnet50 --weights {path}"
        )
    if not isinstance(module, torch.nn.Module):
        raise ModelSpecError(f"{path} holds a {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    pre = _override(IMAGENET, spec, input_channels(module))
    classes, static = classifier_outputs(module, pre)
    extra = {"static_batch": static} if static else {}
    return LoadedModel(module, pre, classes, spec, f"{kind} {path.name}", extra)


def _load_factory(spec: ModelSpec) -> LoadedModel:
    import torch

    mod_name, _, attr = spec.spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelSpecError(
            f"cannot import {spec.spec} ({exc}); make the module importable (PYTHONPATH) and check the name"
        ) from exc
    kwargs: dict[str, Any] = {}
    if spec.num_classes is not None:
        try:
            if "num_classes" in inspect.signature(factory).parameters:
                kwargs["num_classes"] = spec.num_classes
        except (TypeError, ValueError):
            log.debug("cannot inspect the signature of %s", spec.spec)
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
            raise ModelSpecError(f"{spec.weights} does not fit {spec.spec}: {str(exc).splitlines()[0]}") from exc
    module.eval()
    pre = _override(IMAGENET, spec, input_channels(module))
    classes, static = classifier_outputs(module, pre)
    extra = {"static_batch": static} if static else {}
    return LoadedModel(module, pre, classes, spec, f"factory {spec.spec}", extra)


def _load_zoo(spec: ModelSpec, name: str) -> LoadedModel:
    from .zoo import load_zoo_model

    if spec.weights:
        raise ModelSpecError("zoo models bring their own weights; drop --weights")
    module, pre, classes = load_zoo_model(name)
    if spec.num_classes not in (None, classes):
        raise ModelSpecError(f"zoo:{name} has {classes} classes; drop --num-classes")
    return LoadedModel(module, _override(pre, spec), classes, spec, f"zoo:{name}")


def from_module(module: torch.nn.Module, spec: ModelSpec) -> LoadedModel:
    """An in-memory module (the library's ``export_model(model)``): ImageNet's preprocessing unless
    ``spec`` overrides it, as for a module file; ``spec.spec`` is "" (no source to rebuild it from)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ModelSpecError(f"the model is a {type(module).__name__}, not a torch.nn.Module or a MODEL spec")
    pre = _override(IMAGENET, spec)
    classes, static = classifier_outputs(module, pre)
    extra = {"static_batch": static} if static else {}
    return LoadedModel(module, pre, classes, spec, f"{type(module).__name__} (in memory)", extra)


def load_model(spec: ModelSpec | str) -> LoadedModel:
    """Resolve a MODEL spec to an eval-mode module and its preprocessing."""
    if isinstance(spec, str):
        spec = ModelSpec(spec)
    parsed = spec.parsed
    if parsed.kind == "zoo":
        return _load_zoo(spec, parsed.name)
    if parsed.kind == "builder":
        return _load_builder(spec)
    if parsed.kind == "factory":
        return _load_factory(spec)
    return _load_module_file(spec)
