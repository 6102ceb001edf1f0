"""Print pyproject.toml's pinned requirements (the base ones, plus the extras named), one per
line: a Dockerfile installs them in their own layer before it copies the code, so editing the
code does not reinstall torch. --skip drops packages an image already has (vLLM's own torch).

    python pyproject_deps.py --extras ml > requirements.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str], skip: set[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    name = re.compile(r"[A-Za-z0-9._-]+")
    return [r for r in reqs if name.match(r).group(0).lower() not in skip]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    ap.add_argument("--extras", default="", help="comma-separated extras, e.g. ml")
    ap.add_argument("--skip", default="", help="comma-separated package names to leave out")
    a = ap.parse_args()
    extras = [x for x in a.extras.split(",") if x]
    skip = {x.strip().lower() for x in a.skip.split(",") if x.strip()}
    sys.stdout.write("\n".join(requirements(a.pyproject, extras, skip)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
