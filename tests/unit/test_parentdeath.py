"""The parent-death wrapper: it execs the command it is given (same pid, same exit code) and
refuses a malformed command line."""

import subprocess
import sys

from krl.common.parentdeath import dying_with_parent


def test_the_wrapped_command_runs_as_itself():
    argv = dying_with_parent(
        [sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(3)"]
    )
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert int(out) == proc.pid  # exec'd in place: the pid the starter holds is the command's


def test_a_malformed_command_line_is_refused():
    r = subprocess.run(
        [sys.executable, "-m", "krl.common.parentdeath", "x", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "usage:" in r.stderr
