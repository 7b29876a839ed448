"""TensorRT's (and TensorRT-RTX's) builder and runtime log, routed to :mod:`logging`.

TensorRT keeps the first ``ILogger`` it is given and warns on others, so there is one logger per
process and per module (``tensorrt``, ``tensorrt_rtx``, or a test's fake): :func:`make_logger`
caches it.
"""

from __future__ import annotations

import importlib
import logging
import threading
import weakref
from typing import Any

log = logging.getLogger("resdeploy.tensorrt")

__all__ = ["make_logger"]

_LOGGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
# TensorRT-RTX builds ahead of time without a GPU; its CUDA probe then logs these as errors.
_NO_GPU_NOISE = ("cudaError 35", "cudaError 100", "cudaError 999")


def make_logger(trt: Any = None) -> Any:
    """The one ``ILogger`` of ``trt`` (default: the ``tensorrt`` module), forwarding to ``logging``."""
    if trt is None:
        trt = importlib.import_module("tensorrt")
    with _LOCK:
        logger = _LOGGERS.get(trt)
        if logger is None:
            logger = _LOGGERS[trt] = _logger_class(trt)()
        return logger


def _logger_class(trt: Any) -> Any:
    rtx = getattr(trt, "__name__", "") == "tensorrt_rtx"

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            S = trt.ILogger.Severity
            level = {
                S.INTERNAL_ERROR: logging.CRITICAL,
                S.ERROR: logging.ERROR,
                S.WARNING: logging.WARNING,
                S.INFO: logging.DEBUG,
                S.VERBOSE: logging.DEBUG,
            }.get(severity, logging.DEBUG)
            if rtx and level >= logging.ERROR and any(n in msg for n in _NO_GPU_NOISE):
                level = logging.DEBUG  # no usable GPU here: expected for an ahead-of-time build
            log.log(level, "%s", msg)

    return _Logger
