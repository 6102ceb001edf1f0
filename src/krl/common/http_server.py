"""Run a FastAPI app with uvicorn inside the caller's event loop, next to a gRPC server.
Signals belong to the service's main(), so uvicorn's own signal capture is turned off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int, log_level: str = "warning") -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level.lower(), lifespan="off"
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        self._task = asyncio.create_task(self.server.serve())
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.server.started:
            if self._task.done():
                self._task.result()  # re-raise why it failed (port taken, ...)
                raise RuntimeError("HTTP server exited at start")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("HTTP server did not start")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
