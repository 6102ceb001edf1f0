"""What goes into the allocator's image: the service runs without the lab tools, and the image's
install step leaves them out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_allocator_service_imports_nothing_from_the_lab() -> None:
    code = (
        "import sys, krl.allocator.app, krl.cli\n"
        "lab = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['krl', 'tools'], ['krl', 'sim'], ['krl', 'experiment']))\n"
        "print(','.join(lab))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_the_allocator_image_leaves_the_lab_out() -> None:
    import krl.tools

    installed = Path(krl.tools.__file__).parent
    assert (installed / "allocator_bench.py").exists() and (installed / "soak.py").exists()
    docker = (ROOT / "services/allocator/Dockerfile").read_text()
    install = docker[docker.index("--no-deps .") :].split("\n\n")[0]
    assert "rm -rf /install/lib/python3.12/site-packages/krl/tools" in install
    assert "python:3.12" in docker  # the site-packages path above is Python 3.12's
