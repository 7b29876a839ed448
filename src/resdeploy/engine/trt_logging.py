"""TensorRT's builder and runtime log, routed to :mod:`logging`."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("resdeploy.tensorrt")


def make_logger() -> Any:
    """An ``ILogger`` subclass instance forwarding to ``logging`` at matching levels."""
    import tensorrt as trt

    class _Logger(trt.ILogger):
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
            log.log(level, "%s", msg)

    return _Logger()
