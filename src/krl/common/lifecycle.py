"""Run a service app (anything with async start() and stop()) until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A service cannot start for a reason its operator must fix (printed without traceback)."""


class App(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


async def serve_until_signal(app: App, grace_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except BaseException:
        await app.stop()  # what did start (an embedded Redis, a server) stops
        raise
    try:
        await stop.wait()
        log.info("stopping: health NOT_SERVING, %.1fs grace for calls in flight", grace_s)
    finally:
        await app.stop()
