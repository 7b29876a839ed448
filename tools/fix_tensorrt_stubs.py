"""Make PyPI's tensorrt-stubs usable by mypy (see shared TENSORRT notes in the README).

Run with the stubs venv's python. Adds ``py.typed`` to ``tensorrt/`` and ``tensorrt_bindings/``
and fixes two syntax errors of ``tensorrt_bindings/tensorrt.pyi``: parameters named ``in``
and a non-default parameter after defaults.
"""

from __future__ import annotations

import re
import site
import sys
from pathlib import Path


def main() -> int:
    roots = [Path(p) for p in site.getsitepackages()]
    fixed = 0
    for root in roots:
        for pkg in ("tensorrt", "tensorrt_bindings"):
            d = root / pkg
            if d.is_dir():
                (d / "py.typed").touch()
                fixed += 1
        pyi = root / "tensorrt_bindings" / "tensorrt.pyi"
        if pyi.is_file():
            text = pyi.read_text()
            text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
            text = text.replace("channel_axis: int)", "channel_axis: int = ...)")
            pyi.write_text(text)
    if not fixed:
        print("tensorrt-stubs not found in this interpreter's site-packages", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
