"""The deploy tests use the pinned tools of scripts/deploy_tools.sh (make test installs them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/knapsack-rl"


def tool(name: str) -> str:
    path = ROOT / ".tools/bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash scripts/deploy_tools.sh` (make test does)")
    return str(path)


def helm_template(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("helm"), "template", "krl", str(CHART), *args],
        capture_output=True,
        text=True,
        check=check,
    )


def render(*args: str) -> dict[tuple[str, str], dict]:
    """{(kind, name): manifest} of the chart rendered with these helm args."""
    docs = yaml.safe_load_all(helm_template(*args).stdout)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}
