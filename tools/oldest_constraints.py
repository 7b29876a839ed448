"""Print pip constraints pinning every dependency of pyproject.toml to its lower bound.

``make test-oldest`` installs the project with these constraints into ``.venv-oldest`` (Python
3.10): the stack a JetPack 6.0 user has. ``make test-resolved`` leaves NumPy out (``--unpin numpy``)
so that pip picks it within pyproject's range, as it does for a user who installs the floors.
The floors live only in pyproject.toml; this reads them.

    python tools/oldest_constraints.py [--unpin NAME ...] [EXTRA ...] > constraints.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib  # novermin: guarded by the version check
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(?:,[^;]*)?(;.*)?$")


def floors(extras: list[str], unpin: frozenset[str] = frozenset()) -> list[str]:
    """``name==floor[; marker]`` for every dependency and those of EXTRAS, but the names in UNPIN."""
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
        if name.lower() in unpin:
            continue
        out.append(f"{name}=={version}{marker}")
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*", metavar="EXTRA")
    parser.add_argument("--unpin", action="append", default=[], metavar="NAME",
                        help="leave this dependency to pip (within pyproject's range); repeatable")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    unknown = [e for e in args.extras if e not in project.get("optional-dependencies", {})]
    if unknown:
        parser.error(f"no such extra in pyproject.toml: {', '.join(unknown)}")
    print("\n".join(floors(args.extras, frozenset(n.lower() for n in args.unpin))))


if __name__ == "__main__":
    main(sys.argv[1:])
