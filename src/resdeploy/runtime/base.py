"""The one runtime interface: a :class:`Backend` prepares an artifact into a :class:`Session`
(build once); a session is a context manager whose ``infer`` runs many times."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import numpy as np

from .artifact import Artifact

__all__ = ["Backend", "BackendOptions", "Session", "Timing"]


@dataclass(frozen=True)
class BackendOptions:
    threads: int | None = None  # CPU intra-op threads; None: the runtime's default (all cores)
    device: int = 0  # CUDA device ordinal
    cuda_graphs: bool = False  # TensorRT backend: replay a captured CUDA graph
    cache_dir: Path | None = None  # ort-trt engine / timing caches


@dataclass
class Timing:
    """One timed inference, in milliseconds. On GPUs the copies are reported apart."""

    compute_ms: float
    h2d_ms: float = 0.0
    d2h_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.compute_ms + self.h2d_ms + self.d2h_ms


@dataclass
class Session(ABC):
    """A prepared artifact. ``infer`` takes and returns host NumPy arrays."""

    backend: str
    artifact: Artifact
    input_name: str = "input"
    output_names: list[str] = field(default_factory=lambda: ["logits"])
    device: str = "cpu"

    @abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def timed(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        """``infer`` with its latency; GPU sessions override this with event timing."""
        start = time.perf_counter_ns()
        out = self.infer(feed)
        return out, Timing((time.perf_counter_ns() - start) / 1e6)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources (thread pools, device memory)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Backend(ABC):
    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]  # artifact kinds it runs
    device: ClassVar[str] = "cpu"

    def unavailable_reason(self) -> str | None:
        """None when usable here; otherwise one sentence saying what is missing and how to get it."""
        return None

    @abstractmethod
    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session: ...
