"""Decode once, evaluate many: the images of an evaluation, resized to each preprocessing's
input size as uint8 (normalised per batch, which is cheap), and the FP32 reference's logits
cached on disk by model and data.

Decoding runs on a pool of threads (PIL and torch release the GIL) with a progress bar in
images per second; a cache larger than ``RESDEPLOY_EVAL_CACHE_GB`` (default 2) lives in a
memory-mapped file under the cache folder instead of RAM, so 50,000 ImageNet-sized images are
decoded once on a Jetson too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, _io, _progress
from ..data import Dataset
from ..preprocess import Preprocess
from ..runtime.artifact import Artifact

log = logging.getLogger(__name__)

_CHUNK = 256


class InputCache:
    """The images ``indices`` of ``dataset``, decoded and resized once per preprocessing."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, *, workers: int) -> None:
        self.dataset, self.indices, self.workers = dataset, np.asarray(indices, dtype=np.int64), max(1, workers)
        self.decode_seconds = 0.0
        self._resized: dict[Preprocess, np.ndarray] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def n(self) -> int:
        return len(self.indices)

    def _storage(self, shape: tuple[int, ...]) -> np.ndarray:
        budget = float(os.environ.get("RESDEPLOY_EVAL_CACHE_GB", "2")) * (1 << 30)
        if int(np.prod(shape)) <= budget:
            return np.empty(shape, dtype=np.uint8)
        if self._tmp is None:
            root = _io.cache_dir() / "tmp"
            root.mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(prefix="eval-", dir=root)
        path = Path(self._tmp.name) / f"images-{len(self._resized)}.u8"
        log.info("decoded images need %.1f GB: keeping them in %s", np.prod(shape) / 1e9, path)
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)

    def preprocess_for(self, artifact: Artifact) -> Preprocess:
        """The artifact's own preprocessing; for already preprocessed data, only its input size matters."""
        tensors = self.dataset.tensors
        if tensors is not None and artifact.kind == "onnx" and Preprocess.from_metadata(artifact.metadata) is None:
            c, h, w = (int(d) for d in tensors.shape[1:])
            return Preprocess(input_size=(h, w), mean=(0.0,), std=(1.0,), channels=c)
        return artifact.preprocess()

    def prepare(self, pre: Preprocess) -> None:
        """Decode and resize every image for ``pre`` (once; a no-op for preprocessed data)."""
        if self.dataset.preprocessed or pre in self._resized:
            return
        t0 = time.perf_counter()
        store = self._storage((self.n, *pre.input_shape))
        with _progress.counter(self.n, desc=f"decode {self.dataset.name}", unit="img") as advance:
            for start in range(0, self.n, _CHUNK):
                part = self.indices[start : start + _CHUNK]
                store[start : start + len(part)] = self.dataset.resized(part, pre, self.workers)
                advance(len(part))
        self._resized[pre] = store
        self.decode_seconds += time.perf_counter() - t0

    def take(self, pre: Preprocess, start: int, stop: int) -> np.ndarray:
        """float32 model inputs for images ``start:stop``."""
        if self.dataset.preprocessed:
            return self.dataset.take(self.indices[start:stop], pre)
        self.prepare(pre)
        return pre.normalize(np.asarray(self._resized[pre][start:stop]))

    def identity(self) -> dict[str, Any]:
        """What the data is, for cache keys: the images' content (or files' sizes and times) and labels."""
        ds = self.dataset
        h = hashlib.sha256(np.ascontiguousarray(ds.labels[self.indices]).tobytes())
        if ds.images is not None:
            h.update(np.ascontiguousarray(ds.images[self.indices]).tobytes())
        elif ds.tensors is not None:
            h.update(np.ascontiguousarray(ds.tensors[self.indices]).tobytes())
        elif ds.files is not None:
            for i in self.indices:
                st = os.stat(ds.files[int(i)])
                h.update(f"{ds.files[int(i)]}:{st.st_size}:{st.st_mtime_ns}".encode())
        return {"name": ds.name, "n": self.n, "sha256": h.hexdigest()}

    def close(self) -> None:
        self._resized.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> InputCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def artifact_identity(artifact: Artifact) -> dict[str, Any]:
    """What determines a reference model's outputs: its spec and the bytes of every file it reads."""
    from ..models import parse_model_spec
    from ..zoo import zoo_path

    ident: dict[str, Any] = {"text": artifact.text, "options": artifact.model_options}
    files: list[Path] = [artifact.path] if artifact.path is not None else []
    weights = artifact.model_options.get("weights")
    if weights and Path(weights).is_file():
        files.append(Path(weights))
    if artifact.kind == "model" and parse_model_spec(artifact.text).kind == "zoo":
        files.append(zoo_path(artifact.text[4:]))
    ident["files"] = [_io.sha256_file(p) for p in files if p.is_file()]
    return ident


class _LogitsCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hit = False

    def get(self) -> tuple[np.ndarray, float] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                logits, seconds = z["logits"], float(z["seconds"])
        except (OSError, ValueError, KeyError, EOFError):
            log.warning("reference logits cache %s is unreadable; recomputing", self.path)
            return None
        self.hit = True
        log.info("FP32 reference logits reused from %s", self.path)
        return logits, seconds

    def put(self, logits: np.ndarray, seconds: float) -> None:
        if self.path is None or self.hit:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _io.atomic_path(self.path) as tmp, open(tmp, "wb") as f:
            np.savez(f, logits=logits, seconds=np.float64(seconds))


@contextlib.contextmanager
def reference_logits_cache(reference: Artifact, inputs: InputCache, *, enabled: bool) -> Iterator[_LogitsCache]:
    """The reference's logits on these inputs, from ``$RESDEPLOY_CACHE/logits`` when computed before."""
    if not enabled:
        yield _LogitsCache(None)
        return
    import torch

    key = {"model": artifact_identity(reference), "data": inputs.identity(), "preprocess": repr(inputs.preprocess_for(reference)),
           "torch": torch.__version__, "resdeploy": __version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    yield _LogitsCache(_io.cache_dir() / "logits" / f"{digest}.npz")
