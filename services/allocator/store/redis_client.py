"""The allocator's Redis client: standalone or Redis Cluster (found from INFO cluster), with
commands packed by hiredis, and the mapping of its errors to Unavailable. Only the store uses
what this returns."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from krl.common.errors import Unavailable

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def _hiredis_packing(client: aioredis.Redis) -> None:
    """redis-py's asyncio client packs commands in Python, ~0.4 ms for a script call that
    declares 1,028 keys; hiredis packs the same bytes in C. The pool's connections get it."""
    try:
        import hiredis
    except ImportError:  # the pure-Python packer stays
        return
    pool = client.connection_pool

    class HiredisPacking(pool.connection_class):  # type: ignore[name-defined,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT LOAD" -> two arguments
                args = (*args[0].split(), *args[1:])
            try:  # bytes, str, int and float pack as they are; a report sends ~3,000
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
            args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
            try:
                return [hiredis.pack_command(args)]
            except TypeError as e:
                raise rexc.DataError(str(e)) from None

    pool.connection_class = HiredisPacking


async def connect(url: str, timeout_s: float) -> aioredis.Redis | RedisCluster:
    """A client for `url`: a Redis Cluster client when the server says cluster mode is on
    (INFO cluster), else a plain one. Redis errors surface at once; callers retry."""
    opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    plain = aioredis.Redis.from_url(url, retry_on_timeout=False, health_check_interval=0, **opts)
    _hiredis_packing(plain)  # before its first connection
    try:
        info = await plain.info("cluster")
    except (rexc.ConnectionError, rexc.TimeoutError, OSError):
        return plain  # not reachable yet: standalone until proven otherwise (readyz tells)
    if not info.get("cluster_enabled"):
        return plain
    await plain.aclose()
    log.info("Redis at %s runs in cluster mode", url)
    return RedisCluster.from_url(url, **opts)


def redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis down or timing out -> Unavailable; the client reconnects on the next call."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as e:
            raise Unavailable(f"Redis is unreachable: {e}") from e
        except (rexc.ClusterDownError, rexc.TryAgainError, rexc.RedisClusterException) as e:
            raise Unavailable(f"Redis Cluster is failing over: {e}") from e
        except (rexc.MovedError, rexc.AskError, rexc.ReadOnlyError) as e:
            # a slot moved, or its master became a replica, under a transaction: Redis aborted
            # it whole (EXECABORT), so nothing was written and the call can be retried
            raise Unavailable(f"Redis is failing over: {e}") from e

    return wrapper
