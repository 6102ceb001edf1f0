"""The allocator process: Redis (given or embedded), the gRPC server and the HTTP server in one
event loop, with a graceful stop."""

from __future__ import annotations

import asyncio
import logging

from krl.allocator.api import grpc_api
from krl.allocator.api.http_api import build_app
from krl.allocator.build import build_allocator
from krl.allocator.metrics import AllocatorMetrics
from krl.allocator.service import Allocator
from krl.allocator.settings import AllocatorSettings
from krl.common.grpc_server import GrpcServer
from krl.common.http_server import HttpServer
from krl.common.lifecycle import serve_until_signal
from krl.common.redis_server import EmbeddedRedis

log = logging.getLogger(__name__)


class AllocatorApp:
    def __init__(self, settings: AllocatorSettings) -> None:
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None
        self.grpc: GrpcServer | None = None
        self.http: HttpServer | None = None
        self.allocator: Allocator | None = None
        self.watch: asyncio.Task | None = None

    async def start(self) -> None:
        s = self.settings
        url = s.redis_url
        metrics = AllocatorMetrics()
        if url is None:
            # spawned from the loop's thread: the server dies with it (parent-death signal)
            self.embedded = EmbeddedRedis(s.data_dir, appendfsync=s.redis_appendfsync).spawn()
            await asyncio.to_thread(self.embedded.wait_ready)
            url = self.embedded.url
            log.info("no REDIS_URL: embedded redis-server, data in %s", self.embedded.data_dir)
            self.watch = asyncio.create_task(
                self.embedded.supervise(on_restart=metrics.redis_restarts.inc)
            )
        self.allocator = allocator = await build_allocator(s, url, metrics)
        token = s.token()
        self.grpc = GrpcServer(
            host=s.host,
            port=s.grpc_port,
            service_names=[grpc_api.SERVICE_NAME],
            register=grpc_api.register(allocator),
            token=token,
            max_message_bytes=s.max_message_bytes,
        )
        await self.grpc.start()
        self.http = HttpServer(
            build_app(allocator, token), s.host, s.http_port, log_level="warning"
        )
        await self.http.start()
        log.info(
            "allocator ready: gRPC %s:%d, HTTP http://%s:%d (docs /docs, metrics /metrics), auth %s",
            s.host,
            self.grpc.port,
            s.host,
            self.http.port,
            "on" if token else "off",
        )

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(self.settings.grace_s)
        if self.http is not None:
            await self.http.stop()
        if self.watch is not None:
            self.watch.cancel()
        if self.allocator is not None:
            await self.allocator.store.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("allocator stopped")


async def serve(settings: AllocatorSettings) -> None:
    """Run until SIGINT or SIGTERM."""
    await serve_until_signal(AllocatorApp(settings), settings.grace_s)
