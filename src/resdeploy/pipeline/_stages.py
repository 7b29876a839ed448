"""Stage results kept in OUTDIR, keyed by a hash of each stage's inputs, so that re-running
with unchanged inputs reuses finished stages instead of recomputing them.

A stage's record is written only after its artifacts are in place (each written atomically),
so an interrupted or killed run leaves either a finished stage or none: the next run redoes the
missing one. An artifact whose bytes no longer match the sha256 recorded for it (truncated,
replaced, edited) is rebuilt, never reused; an unreadable or malformed record is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import _io

log = logging.getLogger(__name__)

STORE_NAME = ".resdeploy-stages.json"
T = TypeVar("T")


def key_of(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def _valid_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("key"), str) and "result" in entry
            and isinstance(entry.get("artifacts", {}), dict))


class StageStore:
    def __init__(self, outdir: Path) -> None:
        self.path = outdir / STORE_NAME
        self.data: dict[str, Any] = {}
        try:
            data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            log.warning("%s is unreadable; every stage will run again", self.path)
            data = {}
        if isinstance(data, dict):
            self.data = {k: v for k, v in data.items() if _valid_entry(v)}

    def run(self, name: str, params: dict[str, Any], produce: Callable[[], T], artifacts: Sequence[Path] = ()) -> tuple[T, bool]:
        """``produce()``'s (JSON-able) result, or the stored one when ``params`` and the
        artifacts' hashes are unchanged. Returns (result, reused)."""
        key = key_of(params)
        entry = self.data.get(name)
        if entry and entry["key"] == key and self._intact(name, entry.get("artifacts", {})):
            log.info("%s: unchanged inputs, reusing the previous result", name)
            return entry["result"], True
        result = produce()
        self.data[name] = {"key": key, "result": result, "artifacts": {str(p): _io.sha256_file(p) for p in artifacts}}
        _io.write_json(self.path, self.data)
        return result, False

    @staticmethod
    def _intact(name: str, artifacts: dict[str, str]) -> bool:
        for p, sha in artifacts.items():
            if not Path(p).is_file():
                log.info("%s: %s is missing; running the stage again", name, p)
                return False
            if _io.sha256_file(p) != sha:
                log.warning("%s: %s changed since it was written (sha256 differs); rebuilding it", name, p)
                return False
        return True
