"""Child processes that die with their parent: Linux's parent-death signal, set in the child.
A SIGKILLed service must not leave its redis-server or its worker processes running."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
try:  # resolved at import, not in a forked child
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the parent's own stop() is all there is
    _prctl = None


def die_with_parent(parent: int) -> None:
    """Run in the child (a preexec_fn, a pool initializer): SIGKILL it when the thread that
    started it exits; exit at once if `parent` is already gone."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
