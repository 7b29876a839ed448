"""Stage results kept in OUTDIR, keyed by a hash of each stage's inputs, so that re-running
with unchanged inputs reuses finished stages instead of recomputing them."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import _io

log = logging.getLogger(__name__)

STORE_NAME = ".resdeploy-stages.json"


def key_of(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class StageStore:
    def __init__(self, outdir: Path) -> None:
        self.path = outdir / STORE_NAME
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            self.data = {}

    def run(
        self,
        name: str,
        params: dict[str, Any],
        produce: Callable[[], Any],
        artifacts: Sequence[Path] = (),
    ) -> tuple[Any, bool]:
        """``produce()``'s (JSON-able) result, or the stored one when ``params`` and the
        artifacts' hashes are unchanged. Returns (result, reused)."""
        key = key_of(params)
        entry = self.data.get(name)
        if entry and entry.get("key") == key and self._intact(entry.get("artifacts", {})):
            log.info("%s: unchanged inputs, reusing the previous result", name)
            return entry["result"], True
        result = produce()
        self.data[name] = {
            "key": key,
            "result": result,
            "artifacts": {str(p): _io.sha256_file(p) for p in artifacts},
        }
        _io.write_json(self.path, self.data)
        return result, False

    @staticmethod
    def _intact(artifacts: dict[str, str]) -> bool:
        return all(Path(p).is_file() and _io.sha256_file(p) == sha for p, sha in artifacts.items())
