"""Run a FastAPI app with uvicorn inside the caller's event loop, next to a gRPC server.
Signals belong to the service's main(), so uvicorn's own signal capture is turned off."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from krl.common.lifecycle import StartupError


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
        self.host, self.bind_port = host, port
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        sock = self._bind()
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.server.started:
            if self._task.done():
                self._task.result()  # re-raise why it failed
                raise RuntimeError("HTTP server exited at start")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("HTTP server did not start")
            await asyncio.sleep(0.01)

    def _bind(self) -> socket.socket:
        """The listening socket, bound here: uvicorn's own bind ends the process on failure."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, on Linux
        try:
            sock.bind((self.host, self.bind_port))
        except OSError as e:
            sock.close()
            raise StartupError(
                f"cannot serve HTTP on {self.host}:{self.bind_port}: {e.strerror or e}"
            ) from e
        return sock

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
