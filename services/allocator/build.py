"""The one way to build the allocator's use cases from settings: a Redis connection, the
history store over it, the Allocator. The service's app and the simulator both call it, so
what the simulator measures is what the service runs."""

from __future__ import annotations

import redis.asyncio as aioredis

from krl.allocator.metrics import AllocatorMetrics
from krl.allocator.redis_client import connect
from krl.allocator.service import Allocator
from krl.allocator.settings import AllocatorSettings
from krl.allocator.store import HistoryStore


async def build_allocator(
    settings: AllocatorSettings, redis_url: str, metrics: AllocatorMetrics | None = None
) -> tuple[Allocator, aioredis.Redis]:
    """The Allocator over `redis_url` (which may differ from settings.redis_url: an embedded
    server's socket) and its Redis client, for the caller to close."""
    redis = await connect(redis_url, settings.redis_timeout_s)
    store = HistoryStore.from_settings(redis, settings)
    return Allocator(store, settings, metrics or AllocatorMetrics()), redis
