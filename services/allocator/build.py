"""The one way to build the allocator's use cases from settings: the history store over a
Redis connection, the Allocator over it. The service's app and the simulator both call it, so
what the simulator measures is what the service runs."""

from __future__ import annotations

from krl.allocator.metrics import AllocatorMetrics
from krl.allocator.service import Allocator
from krl.allocator.settings import AllocatorSettings
from krl.allocator.store import HistoryStore


async def build_allocator(
    settings: AllocatorSettings, redis_url: str, metrics: AllocatorMetrics | None = None
) -> Allocator:
    """The Allocator over `redis_url` (which may differ from settings.redis_url: an embedded
    server's socket); the caller closes it with `allocator.store.aclose()`."""
    store = await HistoryStore.connect(redis_url, settings)
    return Allocator(store, settings, metrics or AllocatorMetrics())
