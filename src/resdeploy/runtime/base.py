"""The one runtime interface: a :class:`Backend` prepares an artifact into a :class:`Session`
(build once); a session is a context manager whose ``infer`` runs many times.

As in Polygraphy's ``BaseRunner.infer`` -> ``infer_impl``: the concrete :meth:`Session.infer`
checks the feed once (names, dtype, rank, fixed dimensions) against what the artifact declares,
then calls the backend's :meth:`Session.infer_impl`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import numpy as np

from ..errors import UsageError
from .artifact import Artifact

__all__ = ["Backend", "BackendOptions", "Session", "TensorSpec", "Timing"]


@dataclass(frozen=True)
class BackendOptions:
    threads: int | None = None  # CPU intra-op threads; None: the runtime's default (all cores)
    device: int = 0  # CUDA device ordinal
    cuda_graphs: bool = False  # TensorRT backend: replay a captured CUDA graph
    cache_dir: Path | None = None  # ort-trt engine / timing caches
    batch_hint: int | None = None  # the batch size it will mostly run (OpenVINO picks its hint from it)
    debug_tensors: bool = False  # TensorRT backend: collect the plan's debug tensors on every run


@dataclass(frozen=True)
class TensorSpec:
    """A declared input: its name, NumPy dtype and shape (None for a dynamic dimension)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int | None, ...] = (None, 3, None, None)


@dataclass
class Timing:
    """One timed inference, in milliseconds. On GPUs, as trtexec reports it: the host-to-device
    copy, the GPU compute and the device-to-host copy (their sum is the latency), the host time
    of the enqueue call apart, and whether the host buffers were pinned or pageable."""

    compute_ms: float
    h2d_ms: float = 0.0
    d2h_ms: float = 0.0
    enqueue_ms: float | None = None  # GPU sessions only
    host_memory: str | None = None  # "pinned" | "pageable"; GPU sessions only

    @property
    def total_ms(self) -> float:
        return self.compute_ms + self.h2d_ms + self.d2h_ms


@dataclass
class Session(ABC):
    """A prepared artifact. ``infer`` takes and returns host NumPy arrays."""

    backend: str
    artifact: Artifact
    inputs: list[TensorSpec]
    output_names: list[str]
    device: str = "cpu"

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        """Names, dtype, rank and fixed dimensions, each failure one line naming the fix."""
        expected = [t.name for t in self.inputs]
        if sorted(feed) != sorted(expected):
            raise UsageError(f"{self.artifact.name} takes inputs {expected}, got {sorted(feed)}")
        for spec in self.inputs:
            x = feed[spec.name]
            if not isinstance(x, np.ndarray):
                raise UsageError(f"input {spec.name!r} must be a NumPy array, got {type(x).__name__}")
            if x.dtype != np.dtype(spec.dtype):
                raise UsageError(f"input {spec.name!r} must be {spec.dtype}, got {x.dtype}; convert it with .astype")
            if x.ndim != len(spec.shape):
                raise UsageError(f"input {spec.name!r} must have rank {len(spec.shape)} {_shape(spec.shape)}, "
                                 f"got shape {x.shape}")
            bad = [i for i, (d, s) in enumerate(zip(x.shape, spec.shape, strict=True)) if s is not None and d != s]
            if bad:
                raise UsageError(f"input {spec.name!r} has shape {x.shape} but {self.artifact.name} takes "
                                 f"{_shape(spec.shape)}; preprocess the data for this model")

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feed(feed)
        return self.infer_impl(feed)

    def timed(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        """``infer`` with its latency; GPU sessions override :meth:`timed_impl` with event timing."""
        self.check_feed(feed)
        return self.timed_impl(feed)

    def logits(self, x: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        """The first output for ``x`` of any length, in calls the artifact accepts: at most its
        largest batch (a plan's profile, a static ONNX's batch) and at most ``max_batch`` where it
        allows, short calls padded to its smallest."""
        lo, hi = self.artifact.batch_range()
        step = min(hi or len(x), max(lo, max_batch or len(x)))
        outs = []
        for start in range(0, len(x), step):
            part = x[start : start + step]
            pad = max(0, lo - len(part))
            if pad:
                part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
            outs.append(self.infer({self.input_name: part})[self.output_names[0]][: len(part) - pad])
        return np.concatenate(outs)

    @abstractmethod
    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def timed_impl(self, feed: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Timing]:
        start = time.perf_counter_ns()
        out = self.infer_impl(feed)
        return out, Timing((time.perf_counter_ns() - start) / 1e6)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources (thread pools, device memory)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if i == 0 and d is None else "?" if d is None else str(d) for i, d in enumerate(shape)) + ")"


class Backend(ABC):
    """Declared once with :func:`~resdeploy.runtime.registry.register_backend`; ``name``,
    ``kinds`` and ``summary`` feed the CLI's choices and help."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]  # artifact kinds it runs: "onnx", "plan", "model"
    device: ClassVar[str] = "cpu"
    summary: ClassVar[str] = ""
    order: ClassVar[int] = 50  # where it is listed: references, then ONNX Runtime, OpenVINO, TensorRT

    def unavailable_reason(self) -> str | None:
        """None when usable here; otherwise one sentence saying what is missing and how to get it."""
        return None

    @abstractmethod
    def prepare(self, artifact: Artifact, options: BackendOptions) -> Session: ...
