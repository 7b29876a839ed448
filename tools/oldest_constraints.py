"""Print pip constraints pinning every dependency of pyproject.toml to its lower bound.

``make test-oldest`` installs the project with these constraints into ``.venv-oldest`` (Python
3.10): the stack a JetPack 6.0 user has. The floors live only in pyproject.toml; this reads them.

    python tools/oldest_constraints.py [EXTRA ...] > constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib  # novermin: guarded by the version check
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:,[^;]*)?(;.*)?$")


def floors(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    out = []
    for spec in specs:
        m = _FLOOR.match(spec)
        if m is None:
            raise SystemExit(f"{spec!r} has no lower bound (>=); every dependency needs a tested floor")
        name, version, marker = m.group(1).split("[")[0], m.group(2), m.group(3) or ""
        out.append(f"{name}=={version}{marker}")
    return out


if __name__ == "__main__":
    print("\n".join(floors(sys.argv[1:])))
