"""An optimistic transaction in two round trips: WATCH and the reads sent together, then MULTI,
the writes and EXEC together. redis-py's transaction pipeline sends WATCH on its own and each
read after it on its own (a round trip each); on one held connection the same commands go in
two writes. Redis Cluster keeps redis-py's pipeline (it follows the slot's node and its
redirections), at the cost of a round trip more.

Replies are as the connection's protocol gives them (HGETALL a flat list, or a map under
RESP3; SMISMEMBER integers or booleans); error replies are raised (a MULTI's reply to EXEC is
None when a watched key changed, and commit answers False)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

Command = Sequence[Any]


class Watched:
    async def read(self, watch: Sequence[str], commands: Sequence[Command]) -> list[Any]:
        """WATCH `watch`, then the commands' replies (read after the WATCH took effect)."""
        raise NotImplementedError

    async def commit(self, commands: Sequence[Command]) -> bool:
        """MULTI, the commands, EXEC: False (nothing written) when a watched key changed."""
        raise NotImplementedError


@asynccontextmanager
async def watched(r) -> AsyncIterator[Watched]:
    if isinstance(r, RedisCluster):
        async with r.pipeline(transaction=True) as pipe:
            yield _ClusterWatched(r, pipe)
        return
    pool = r.connection_pool
    conn = await pool.get_connection()
    w = _HeldConnection(conn)
    try:
        yield w
    finally:
        try:
            if w.dirty:  # left mid-exchange: replies may be pending; never reuse it
                await conn.disconnect()
            elif w.watching:  # left before committing: the connection goes back clean
                await w.exchange([("UNWATCH",)])
        except (rexc.ConnectionError, rexc.TimeoutError, OSError):
            await conn.disconnect()
        finally:
            await pool.release(conn)


class _HeldConnection(Watched):
    def __init__(self, conn) -> None:
        self.conn = conn
        self.watching = False
        self.dirty = False

    async def exchange(self, commands: Sequence[Command]) -> list[Any]:
        self.dirty = True
        await self.conn.send_packed_command(self.conn.pack_commands(commands))
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(await self.conn.read_response())
            except rexc.ResponseError as e:
                out.append(e)
        self.dirty = False
        return out

    async def read(self, watch: Sequence[str], commands: Sequence[Command]) -> list[Any]:
        self.watching = True
        replies = await self.exchange([("WATCH", *watch), *commands])
        _raise_first(replies)
        return replies[1:]

    async def commit(self, commands: Sequence[Command]) -> bool:
        replies = await self.exchange([("MULTI",), *commands, ("EXEC",)])
        self.watching = False  # EXEC unwatches, applied or not
        _raise_first(replies[:-1])
        done = replies[-1]
        if isinstance(done, Exception):
            raise done
        if done is not None:
            _raise_first(done)
        return done is not None


class _ClusterWatched(Watched):
    def __init__(self, r, pipe) -> None:
        self.r, self.pipe = r, pipe

    async def read(self, watch: Sequence[str], commands: Sequence[Command]) -> list[Any]:
        await self.pipe.watch(*watch)
        # Read on another connection, after the WATCH: a change made since aborts the MULTI.
        async with self.r.pipeline(transaction=False) as read:
            for c in commands:
                read.execute_command(*c)
            replies = await read.execute()
        return replies

    async def commit(self, commands: Sequence[Command]) -> bool:
        self.pipe.multi()
        for c in commands:
            self.pipe.execute_command(*c)
        try:
            await self.pipe.execute()
        except rexc.WatchError:
            return False
        return True


def _raise_first(replies: Sequence[Any]) -> None:
    for x in replies:
        if isinstance(x, Exception):
            raise x
