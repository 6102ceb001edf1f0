"""Child processes that die with their parent: Linux's parent-death signal, set in the child.
A SIGKILLed service must not leave its redis-server or its worker processes running.

A process started with `dying_with_parent(argv)` runs this module first, which sets the signal
and then execs argv (the signal survives exec). No Python code runs between fork and exec, as a
preexec_fn's would: in a process whose gRPC threads are busy, such a child can abort before it
execs (seen as redis-server or a service exiting at start with SIGABRT)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
try:  # resolved at import, not in a forked child
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the parent's own stop() is all there is
    _prctl = None


def die_with_parent(parent: int) -> None:
    """Run in the child (a pool initializer, or this module before exec): SIGKILL it when the
    thread that started it exits; exit at once if `parent` is already gone."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """The command line that runs argv with the parent-death signal set (argv itself where
    there is no such signal); start it from the thread whose exit should kill it."""
    if _prctl is None:
        return list(argv)
    return [sys.executable, "-m", "krl.common.parentdeath", str(os.getpid()), "--", *argv]


def main(args: Sequence[str]) -> None:
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        sys.exit("usage: python -m krl.common.parentdeath PARENT_PID -- COMMAND [ARGS...]")
    die_with_parent(int(args[0]))
    os.execvp(args[2], list(args[2:]))


if __name__ == "__main__":
    main(sys.argv[1:])
