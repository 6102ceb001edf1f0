"""The rollout process: engine replicas (worker processes), the gRPC server and the HTTP server
in one event loop, with a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os

from krl.common.grpc_server import GrpcServer
from krl.common.http_server import HttpServer
from krl.common.lifecycle import serve_until_signal
from krl.rollout import grpc_api
from krl.rollout.http_api import build_app
from krl.rollout.metrics import RolloutMetrics
from krl.rollout.replicas import ReplicaPool
from krl.rollout.scoring import ScoringPool
from krl.rollout.service import Rollout
from krl.rollout.settings import DEFAULT_MODEL, RolloutSettings

log = logging.getLogger(__name__)


def _tokenizer(settings: RolloutSettings):
    from krl.model.loading import load_tokenizer

    e = settings.engine
    return load_tokenizer(e.tokenizer if e.type == "openai" else e.model)


def ensure_default_model(settings: RolloutSettings) -> None:
    """The embedded default: build the tiny model when the default folder is asked for and empty."""
    e = settings.engine
    if e.type != "openai" and e.model == DEFAULT_MODEL and not (e.model / "config.json").exists():
        from krl.model.tiny import build_tiny_model

        build_tiny_model(e.model)
        log.info("built the tiny from-scratch model in %s (untrained)", e.model)


class RolloutApp:
    def __init__(self, settings: RolloutSettings) -> None:
        self.settings = settings
        self.grpc: GrpcServer | None = None
        self.http: HttpServer | None = None
        self.pool: ReplicaPool | None = None
        self.rollout: Rollout | None = None
        self.scoring: ScoringPool | None = None

    async def start(self) -> None:
        s = self.settings
        await asyncio.to_thread(ensure_default_model, s)
        threads = s.threads_per_replica or max(1, (os.cpu_count() or 1) // s.replicas)
        metrics = RolloutMetrics()
        self.pool = ReplicaPool(
            s.engine.model_dump_json(),
            s.replicas,
            threads,
            s.log_level,
            start_timeout_s=s.start_timeout_s,
            metrics=metrics,
        )
        tokenizer = await asyncio.to_thread(_tokenizer, s)
        self.scoring = ScoringPool(s.verify_workers, s.verify_timeout_s)
        await asyncio.gather(self.pool.start(), self.scoring.warm())
        self.rollout = Rollout(self.pool, tokenizer, s, metrics, self.scoring)
        token = s.token()
        self.grpc = GrpcServer(
            host=s.host,
            port=s.grpc_port,
            service_names=[grpc_api.SERVICE_NAME],
            register=grpc_api.register(self.rollout),
            token=token,
            max_message_bytes=s.max_message_bytes,
        )
        await self.grpc.start()
        self.http = HttpServer(
            build_app(self.rollout, token), s.host, s.http_port, log_level="warning"
        )
        await self.http.start()
        info = self.pool.info
        log.info(
            "rollout ready: engine %s (%s), %d replica(s) x %d threads, gRPC %s:%d, "
            "HTTP http://%s:%d (metrics /metrics), auth %s",
            info.engine,
            info.model,
            s.replicas,
            threads,
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
        if self.pool is not None:
            await self.pool.stop()
        if self.scoring is not None:
            await asyncio.to_thread(self.scoring.stop)
        log.info("rollout stopped")


async def serve(settings: RolloutSettings) -> None:
    """Run until SIGINT or SIGTERM."""
    await serve_until_signal(RolloutApp(settings), settings.grace_s)
