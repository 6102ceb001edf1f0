"""The history store: the only module that talks to Redis.

Keys (the namespace sits in a hash tag, so one namespace lives in one cluster slot):
  krl:namespaces                  set of namespace names
  krl:{ns}:meta                   hash: prompts, sum_p, sum_p2, sum_inv_t, h0..h9, solved,
                                  unsolved, tok_w, tok_sum, reports, allocations
  krl:{ns}:r:<prompt id>          string: the prompt's record, packed (history.py: a head of
                                  RECORD_FIELDS doubles, then RECENT_KEPT recent visits)
  krl:{ns}:lv                     hash 'k:n' -> prompts whose last visit had k successes of n
                                  trials (what the grid prior is fitted to)
  krl:{ns}:a:<allocation id>      hash: _step, _meta (JSON), _n (JSON: prompt id -> n) (TTL)
  krl:{ns}:a:<allocation id>:r    set of prompt ids already reported               (TTL)
  krl:{ns}:allocs                 list of allocation ids, newest first; past max_allocations_kept
                                  the oldest are dropped with their hashes and sets
An allocation lives allocation_ttl_s, or reported_allocation_ttl_s once every prompt with n > 0
is reported (report.lua).
Reading a batch is one Lua call (lua/read.lua) and so is recording a report (lua/report.lua);
each takes its prompt ids packed in one JSON argument, since packing thousands of arguments
costs more than Redis's work.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from krl.allocator.history import (
    HEAD_BYTES,
    HIST_BINS,
    RECENT_KEPT,
    RECORD_BYTES,
    RECORD_FIELDS,
    RECORD_PREFIX,
    BatchHistory,
    PromptRecord,
    decay_factor,
    recent_of,
    unpack_heads,
    unpack_records,
)
from krl.allocator.prior import RateMoments
from krl.allocator.settings import AllocatorSettings
from krl.common.errors import InvalidArgument, NotFound, Unavailable
from krl_client.messages import Outcome

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class ReportResult:
    accepted: int
    duplicates: list[str]


def _redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis down or timing out -> Unavailable; the client reconnects on the next call."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as e:
            raise Unavailable(f"Redis is unreachable: {e}") from e
        except (rexc.ClusterDownError, rexc.TryAgainError, rexc.RedisClusterException) as e:
            raise Unavailable(f"Redis Cluster is failing over: {e}") from e

    return wrapper


def _glob_escape(s: str) -> str:
    """A literal for a SCAN MATCH pattern (the namespace's hash tag has braces, ids may have *)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def _logit(rate: float) -> float:
    r = min(max(rate, 1e-3), 1 - 1e-3)  # as report.lua clips it
    return float(np.log(r / (1 - r)))


@dataclass(frozen=True)
class OutcomeColumns:
    """A report's outcomes as columns (what the use case checks and the script is sent)."""

    prompt_ids: list[str]
    successes: np.ndarray
    trials: np.ndarray
    total_tokens: np.ndarray

    @classmethod
    def of(cls, outcomes: Sequence[Outcome] | OutcomeColumns) -> OutcomeColumns:
        if isinstance(outcomes, OutcomeColumns):
            return outcomes
        n = len(outcomes)
        return cls(
            [o.prompt_id for o in outcomes],
            np.fromiter((o.successes for o in outcomes), np.int64, n),
            np.fromiter((o.trials for o in outcomes), np.int64, n),
            np.fromiter((o.total_tokens for o in outcomes), np.int64, n),
        )

    def __len__(self) -> int:
        return len(self.prompt_ids)


def _pairs(flat: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HGETALL of the last-visit counts ('k:n' -> prompts) -> (successes, trials, prompts)."""
    keys = [x.decode() for x in flat[0::2]]
    k = np.fromiter((int(f.partition(":")[0]) for f in keys), np.int64, len(keys))
    n = np.fromiter((int(f.partition(":")[2]) for f in keys), np.int64, len(keys))
    c = np.fromiter((int(x) for x in flat[1::2]), np.int64, len(keys))
    return k, n, c


class HistoryStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        half_life_steps: float,
        allocation_ttl_s: int,
        reported_ttl_s: int = 3600,
        allocations_kept: int = 1000,
    ) -> None:
        self.r = client
        self.cluster = isinstance(client, RedisCluster)
        self.half_life = float(half_life_steps)
        self.ttl = int(allocation_ttl_s)
        self.reported_ttl = min(int(reported_ttl_s), self.ttl)
        self.kept = int(allocations_kept)
        self._listed: set[str] = set()  # namespaces this process has put in krl:namespaces
        lua = resources.files("krl.allocator").joinpath("lua")
        self._report = self.r.register_script(lua.joinpath("report.lua").read_text())
        self._read = self.r.register_script(lua.joinpath("read.lua").read_text())

    @classmethod
    def from_settings(cls, client: aioredis.Redis, s: AllocatorSettings) -> HistoryStore:
        """The one way the service and the simulator build a store from settings."""
        return cls(
            client,
            half_life_steps=s.half_life_steps,
            allocation_ttl_s=s.allocation_ttl_s,
            reported_ttl_s=s.reported_allocation_ttl_s,
            allocations_kept=s.max_allocations_kept,
        )

    @staticmethod
    def _k(ns: str, *parts: str) -> str:
        return ":".join(("krl", "{" + ns + "}", *parts))

    @staticmethod
    def _records(ns: str, prompt_ids: Sequence[str]) -> list[str]:
        prefix = f"krl:{{{ns}}}:{RECORD_PREFIX}:"
        return [prefix + pid for pid in prompt_ids]

    @_redis_errors
    async def ping(self) -> bool:
        return bool(await self.r.ping())

    @_redis_errors
    async def read_batch(self, ns: str, prompt_ids: Sequence[str], step: int) -> BatchHistory:
        keys = [self._k(ns, "meta"), self._k(ns, "lv"), *self._records(ns, prompt_ids)]
        res = await self._read(keys, [RECORD_BYTES])
        meta = [float(x) for x in res[:8]]
        rec, visits = unpack_records(res[8], len(prompt_ids))
        col = {name: np.nan_to_num(rec[:, i]) for i, name in enumerate(RECORD_FIELDS)}
        w = decay_factor(step, col["step"], self.half_life)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_tokens = np.where(col["tw"] > 0, col["ts"] / col["tw"], np.nan)
        return BatchHistory(
            evidence_successes=col["s"] * w,
            evidence_failures=col["f"] * w,
            last_successes=col["ls"],
            last_trials=col["lt"],
            mean_tokens=mean_tokens,
            moments=RateMoments(*meta[:4]),
            tokens_mean_namespace=meta[5] / meta[4] if meta[4] > 0 else float("nan"),
            visits=visits,
            last_visit_pairs=_pairs(res[9]),
            rate_logit=_logit(meta[6] / meta[7]) if meta[7] > 0 else None,
        )

    @_redis_errors
    async def save_allocation(
        self,
        ns: str,
        alloc_id: str,
        step: int,
        meta: dict[str, Any],
        n: dict[str, int],
        *,
        listed: bool = True,
    ) -> None:
        """listed False: an internal allocation (an import's) that the allocation list, 'latest'
        and the allocation counter do not show."""
        key, allocs = self._k(ns, "a", alloc_id), self._k(ns, "allocs")
        mapping = {"_step": step, "_meta": json.dumps(meta), "_n": json.dumps(n)}
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.ttl)
            if listed:
                pipe.lpush(allocs, alloc_id)
                pipe.lrange(allocs, self.kept, -1)
                pipe.ltrim(allocs, 0, self.kept - 1)
                pipe.hincrby(self._k(ns, "meta"), "allocations", 1)
            res = await pipe.execute()
        if listed and (dropped := [x.decode() for x in res[3]]):
            # The oldest beyond max_allocations_kept go, with their reported sets.
            keys = [self._k(ns, "a", x, *r) for x in dropped for r in ((), ("r",))]
            await self.r.delete(*keys)
        # Another slot than the namespace's keys, so not in their transaction (Redis Cluster).
        # Once per namespace and process: a round trip per Allocate otherwise.
        if ns not in self._listed:
            await self.r.sadd("krl:namespaces", ns)
            self._listed.add(ns)

    @_redis_errors
    async def report(
        self, ns: str, alloc_id: str, outcomes: Sequence[Outcome] | OutcomeColumns
    ) -> ReportResult:
        cols = OutcomeColumns.of(outcomes)
        keys = [
            self._k(ns, "a", alloc_id),
            self._k(ns, "a", alloc_id, "r"),
            self._k(ns, "meta"),
            self._k(ns, "lv"),
            *self._records(ns, cols.prompt_ids),
        ]
        rows = zip(
            cols.prompt_ids,
            cols.successes.tolist(),
            cols.trials.tolist(),
            cols.total_tokens.tolist(),
            strict=True,
        )
        packed = json.dumps(list(rows))
        args = [self.half_life, self.ttl, RECENT_KEPT, self.reported_ttl, packed]
        res = [x.decode() if isinstance(x, bytes) else x for x in await self._report(keys, args)]
        if res[0] == "NOT_FOUND":
            raise NotFound(f"no allocation {alloc_id!r} in namespace {ns!r} (unknown or expired)")
        if res[0] == "NOT_IN_ALLOCATION":
            raise InvalidArgument(
                f"prompt {res[1]!r} is not part of allocation {alloc_id!r}",
                field="outcomes.prompt_id",
            )
        if res[0] == "TRIALS_OVER_N":
            raise InvalidArgument(
                f"prompt {res[1]!r} reports more trials than the {res[2]} it was allotted",
                field="outcomes.trials",
            )
        return ReportResult(accepted=int(res[1]), duplicates=[str(x) for x in res[2:]])

    @_redis_errors
    async def get_allocation(self, ns: str, alloc_id: str) -> dict[str, Any]:
        if alloc_id == "latest":
            latest = await self.r.lindex(self._k(ns, "allocs"), 0)
            if latest is None:
                raise NotFound(f"namespace {ns!r} has no allocation")
            alloc_id = latest.decode()
        raw = await self.r.hgetall(self._k(ns, "a", alloc_id))
        if not raw:
            raise NotFound(f"no allocation {alloc_id!r} in namespace {ns!r} (unknown or expired)")
        meta = json.loads(raw[b"_meta"])
        n = json.loads(raw[b"_n"])
        reported = await self.r.scard(self._k(ns, "a", alloc_id, "r"))
        return {"allocation_id": alloc_id, **meta, "reported_prompts": reported, "n": n}

    @_redis_errors
    async def prompt_records(
        self, ns: str, prompt_ids: Sequence[str], step: int
    ) -> list[PromptRecord]:
        raws = await self.r.mget(self._records(ns, prompt_ids))
        out = []
        for pid, raw in zip(prompt_ids, raws, strict=True):
            if raw is None:
                out.append(PromptRecord(pid))
                continue
            v = dict(zip(RECORD_FIELDS, unpack_heads(raw[:HEAD_BYTES], 1)[0].tolist(), strict=True))
            w = float(decay_factor(step if step > 0 else v["step"], v["step"], self.half_life))
            out.append(
                PromptRecord(
                    prompt_id=pid,
                    found=True,
                    evidence_successes=v["s"] * w,
                    evidence_failures=v["f"] * w,
                    last_step=int(v["step"]),
                    visits=int(v["visits"]),
                    trials=int(v["trials"]),
                    successes=int(v["successes"]),
                    last_successes=int(v["ls"]),
                    last_trials=int(v["lt"]),
                    mean_tokens=v["ts"] / v["tw"] if v["tw"] > 0 else 0.0,
                    recent=recent_of(raw),
                )
            )
        return out

    @_redis_errors
    async def scan_prompt_ids(self, ns: str, cursor: int, limit: int) -> tuple[list[str], int]:
        """About `limit` prompt ids with a record, from a SCAN cursor (0: start); the next
        cursor is 0 when the scan is done. Each id present for the whole scan comes once."""
        prefix = self._k(ns, RECORD_PREFIX, "")
        # On a cluster, the node that holds the namespace's slot (a cursor is per node).
        where = {"target_nodes": self.r.get_node_from_key(prefix)} if self.cluster else {}
        ids: list[str] = []
        while True:
            cursor, keys = await self.r.scan(
                cursor, match=_glob_escape(prefix) + "*", count=limit, **where
            )
            if isinstance(cursor, dict):  # a cluster client answers {node: cursor}
                (cursor,) = cursor.values()
            ids.extend(k.decode()[len(prefix) :] for k in keys)
            if cursor == 0 or len(ids) >= limit:
                return ids, int(cursor)

    @_redis_errors
    async def raw_records(self, ns: str, prompt_ids: Sequence[str]) -> list[bytes | None]:
        return await self.r.mget(self._records(ns, prompt_ids))

    @_redis_errors
    async def namespaces(self) -> list[str]:
        return sorted(x.decode() for x in await self.r.smembers("krl:namespaces"))

    @_redis_errors
    async def namespace_meta(self, ns: str) -> dict[str, float]:
        raw = await self.r.hgetall(self._k(ns, "meta"))
        if not raw and not await self.r.sismember("krl:namespaces", ns):
            raise NotFound(f"no namespace {ns!r}")
        meta = {k.decode(): float(v) for k, v in raw.items()}
        meta.setdefault("prompts", 0.0)
        for i in range(HIST_BINS):
            meta.setdefault(f"h{i}", 0.0)
        return meta

    @_redis_errors
    async def prompt_counts(self) -> dict[str, int]:
        """Over all namespaces (for the gauges): prompts tracked, and those whose last visit was
        all correct (solved) or all wrong (unsolved)."""
        fields = ("prompts", "solved", "unsolved")
        out = dict.fromkeys(fields, 0)
        names = await self.r.smembers("krl:namespaces")
        if not names:
            return out
        async with self.r.pipeline(transaction=False) as pipe:
            for ns in names:
                pipe.hmget(self._k(ns.decode(), "meta"), list(fields))
            rows = await pipe.execute()
        for row in rows:
            for name, v in zip(fields, row, strict=True):
                out[name] += int(float(v)) if v is not None else 0
        return out
