"""resdeploy: a trained ResNet from PyTorch to a fast, verified edge deployment.

The stages as functions, loaded on first use (``import resdeploy`` loads none of torch,
onnxruntime or TensorRT)::

    import resdeploy
    resdeploy.export_model(model, "m.onnx", input_size=32)
    resdeploy.quantize_model("m.onnx", "m-int8.onnx", calib=loader)
    resdeploy.evaluate(["m.onnx", "m-int8.onnx"], val_loader, reference=model)

They live in :mod:`resdeploy.api`; the stage packages :mod:`resdeploy.export`,
:mod:`resdeploy.quantize`, :mod:`resdeploy.engine` (TensorRT), :mod:`resdeploy.runtime` and
:mod:`resdeploy.pipeline` keep their own names. Errors are :mod:`resdeploy.errors`' classes.
"""

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# A library logs and never prints: without a handler of the application's, nothing is shown.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_API = ("export_model", "fold_bn", "quantize_model", "build_engine", "engine_command", "evaluate", "bench",
        "make_bundle", "verify_bundle", "run_pipeline", "BenchReport", "BuildResult", "BundleResult", "EngineCommand",
        "EvalReport", "ExportResult", "FoldResult", "QuantizeResult", "RunResult", "VerifyReport")
_ERRORS = ("ResdeployError", "UsageError", "ModelSpecError", "DataSpecError", "BackendUnavailableError", "StageError",
           "ExportError", "VerificationError", "QuantizeError", "BuildError")


def __getattr__(name: str) -> Any:
    """The library's names, imported when first asked for (PEP 562)."""
    module = "api" if name in _API else "errors" if name in _ERRORS else None
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_ERRORS])


__all__ = ["__version__", *_API, *_ERRORS]
