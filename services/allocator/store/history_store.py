"""HistoryStore, the store room's face: the use cases call it, and only this room (it, the
report and import transactions and the connection) talks to Redis.

Keys (the namespace sits in a hash tag, so one namespace lives in one cluster slot):
  krl:namespaces                  set of namespace names
  krl:{ns}:meta                   hash: prompts, sum_p, sum_p2, sum_inv_t, h0..h9, solved,
                                  unsolved, tok_w, tok_sum, reports, allocations
  krl:{ns}:r:<prompt id>          string: the prompt's record, packed (record.py: a head of
                                  RECORD_FIELDS doubles, then RECENT_KEPT recent visits)
  krl:{ns}:lv                     hash 'k:n' -> prompts whose last visit had k successes of n
                                  trials (what the grid prior is fitted to)
  krl:{ns}:a:<allocation id>      hash: _step, _meta (JSON), _n (JSON: prompt id -> n), _open
                                  (prompts with n > 0) (TTL)
  krl:{ns}:a:<allocation id>:r    set of prompt ids already reported               (TTL)
  krl:{ns}:v                      string: the namespace's report version, a random token each
                                  report sets (what it WATCHes; record_cache.py)
  krl:{ns}:imported               hash prompt id -> digest of the import line that stored it
                                  (import_write.py)
  krl:{ns}:allocs                 list of allocation ids, newest first; past max_allocations_kept
                                  the oldest are dropped with their hashes and sets
An allocation lives allocation_ttl_s, or reported_allocation_ttl_s once every prompt with n > 0
is reported (report_write.py).
Reading a batch is one MULTI (MGET of the records); a report is read under WATCH, computed in
numpy and written in one MULTI (report_write.py). No Lua: per-record work in Redis's Lua cost
more than the rest of a call (~1.3 ms to pad 1,024 records, ~6 ms to update them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from krl.allocator.settings import AllocatorSettings
from krl.allocator.solve.posterior import BatchHistory, decay_factor
from krl.allocator.solve.prior import RateMoments
from krl.allocator.store import import_write, report_write
from krl.allocator.store.record import (
    HEAD_BYTES,
    HIST_BINS,
    RECORD_FIELDS,
    RECORD_PREFIX,
    PromptRecord,
    recent_of,
    unpack_heads,
    unpack_records,
    whole_records,
)
from krl.allocator.store.record_cache import (
    META_FIELDS,
    AllocationCache,
    NamespaceState,
    RecordCache,
    version_of,
)
from krl.allocator.store.redis_client import connect, redis_errors
from krl.allocator.store.report_write import OutcomeColumns, ReportResult
from krl.common.errors import NotFound
from krl_client.messages import Outcome

log = logging.getLogger(__name__)
READ_META = ("prompts", "sum_p", "sum_p2", "sum_inv_t", "rate_s", "rate_w")
"""The namespace meta fields an allocation reads (its prior's moments, its success rate)."""


def _glob_escape(s: str) -> str:
    """A literal for a SCAN MATCH pattern (the namespace's hash tag has braces, ids may have *)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def _logit(rate: float) -> float:
    r = min(max(rate, 1e-3), 1 - 1e-3)  # as record_update.milli_logit clips it
    return float(np.log(r / (1 - r)))


def _pairs(lv: dict[bytes, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last-visit counts ('k:n' -> prompts) -> (successes, trials, prompts), ordered by
    (n, k): the prior fitted to them must not depend on the order a hash was read in."""
    kn = [f.partition(b":") for f in lv]
    k = np.fromiter((int(a) for a, _, _ in kn), np.int64, len(kn))
    n = np.fromiter((int(b) for _, _, b in kn), np.int64, len(kn))
    c = np.fromiter(lv.values(), np.int64, len(kn))
    order = np.lexsort((k, n))
    return k[order], n[order], c[order]


class HistoryStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        half_life_steps: float,
        allocation_ttl_s: int,
        reported_ttl_s: int = 3600,
        allocations_kept: int = 1000,
        record_cache_bytes: int = 64 << 20,
    ) -> None:
        self.r = client
        self.cluster = isinstance(client, RedisCluster)
        self.half_life = float(half_life_steps)
        self.ttl = int(allocation_ttl_s)
        self.reported_ttl = min(int(reported_ttl_s), self.ttl)
        self.kept = int(allocations_kept)
        self._listed: set[str] = set()  # namespaces this process has put in krl:namespaces
        records = RecordCache(record_cache_bytes)  # allocations: as many prompts as records
        self.known = report_write.Known(records, AllocationCache(records.max_entries))

    @classmethod
    async def connect(cls, url: str, s: AllocatorSettings) -> HistoryStore:
        """The one way the service and the simulator build a store from settings: a client of
        the Redis (or Redis Cluster) at `url`, closed by aclose()."""
        return cls.from_settings(await connect(url, s.redis_timeout_s), s)

    @classmethod
    def from_settings(cls, client: aioredis.Redis, s: AllocatorSettings) -> HistoryStore:
        """A store over an existing client (the caller closes it)."""
        return cls(
            client,
            half_life_steps=s.half_life_steps,
            allocation_ttl_s=s.allocation_ttl_s,
            reported_ttl_s=s.reported_allocation_ttl_s,
            allocations_kept=s.max_allocations_kept,
            record_cache_bytes=s.record_cache_mb << 20,
        )

    async def aclose(self) -> None:
        await self.r.aclose()

    @staticmethod
    def _k(ns: str, *parts: str) -> str:
        return ":".join(("krl", "{" + ns + "}", *parts))

    @staticmethod
    def _records(ns: str, prompt_ids: Sequence[str]) -> list[str]:
        prefix = f"krl:{{{ns}}}:{RECORD_PREFIX}:"
        return [prefix + pid for pid in prompt_ids]

    @redis_errors
    async def ping(self) -> bool:
        return bool(await self.r.ping())

    @redis_errors
    async def read_batch(self, ns: str, prompt_ids: Sequence[str], step: int) -> BatchHistory:
        """The batch's histories in one snapshot (MULTI): the namespace's meta and last-visit
        counts, and the records this process does not hold at the current report version."""
        for _ in range(2):  # a second time with nothing held when what was held is stale
            cached = self.known.records.lookup(ns, prompt_ids)
            need = [prompt_ids[i] for i in cached.need]
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.get(self._k(ns, "v"))
                if cached.state is None:
                    pipe.hmget(self._k(ns, "meta"), list(META_FIELDS))
                    pipe.hgetall(self._k(ns, "lv"))
                if need:  # one slot: a cluster pipeline blocks mget(), not the command
                    pipe.execute_command("MGET", *self._records(ns, need))
                token, *got = await pipe.execute()
            version = version_of(token)
            read = NamespaceState.from_replies(got[0], got[1]) if cached.state is None else None
            fetched = got[-1] if need else []
            if self.known.records.settle(ns, version, cached, prompt_ids, fetched, read):
                break
        state = cached.state
        meta = [state.meta[f] for f in READ_META]
        rec, visits = unpack_records(whole_records(cached.raws), len(prompt_ids))
        rec = np.nan_to_num(rec)
        col = {name: rec[:, i] for i, name in enumerate(RECORD_FIELDS)}
        w = decay_factor(step, col["step"], self.half_life)
        return BatchHistory(
            evidence_successes=col["s"] * w,
            evidence_failures=col["f"] * w,
            last_successes=col["ls"],
            last_trials=col["lt"],
            moments=RateMoments(*meta[:4]),
            visits=visits,
            last_visit_pairs=_pairs(state.last_visits),
            rate_logit=_logit(meta[4] / meta[5]) if meta[5] > 0 else None,
        )

    @redis_errors
    async def save_allocation(
        self,
        ns: str,
        alloc_id: str,
        step: int,
        meta: dict[str, Any],
        n: dict[str, int],
    ) -> None:
        key, allocs = self._k(ns, "a", alloc_id), self._k(ns, "allocs")
        opened = report_write.open_prompts(n)
        mapping = {"_step": step, "_meta": json.dumps(meta), "_n": json.dumps(n), "_open": opened}
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.ttl)
            pipe.lpush(allocs, alloc_id)
            pipe.lrange(allocs, self.kept, -1)
            pipe.ltrim(allocs, 0, self.kept - 1)
            pipe.hincrby(self._k(ns, "meta"), "allocations", 1)
            res = await pipe.execute()
        self.known.allocations.put(key, step, n, opened)
        if dropped := [x.decode() for x in res[3]]:
            # The oldest beyond max_allocations_kept go, with their reported sets.
            keys = [self._k(ns, "a", x, *r) for x in dropped for r in ((), ("r",))]
            await self.r.delete(*keys)
        await self._list(ns)

    async def _list(self, ns: str) -> None:
        """Put the namespace in krl:namespaces: another slot than its keys, so not in their
        transaction (Redis Cluster); once per namespace and process (a round trip otherwise)."""
        if ns not in self._listed:
            await self.r.sadd("krl:namespaces", ns)
            self._listed.add(ns)

    @redis_errors
    async def report(
        self, ns: str, alloc_id: str, outcomes: Sequence[Outcome] | OutcomeColumns
    ) -> ReportResult:
        """Record the outcomes atomically and once (report_write); a rejected report writes
        nothing."""
        cols = OutcomeColumns.of(outcomes)
        keys = report_write.ReportKeys(
            allocation=self._k(ns, "a", alloc_id),
            reported=self._k(ns, "a", alloc_id, "r"),
            meta=self._k(ns, "meta"),
            last_visits=self._k(ns, "lv"),
            version=self._k(ns, "v"),
            records=self._records(ns, cols.prompt_ids),
        )
        ttl = report_write.ReportTTL(open_s=self.ttl, done_s=self.reported_ttl)
        return await report_write.write(
            self.r, keys, alloc_id, ns, cols, self.half_life, ttl, self.known
        )

    @redis_errors
    async def import_prompts(
        self,
        ns: str,
        prompts: Sequence[import_write.ImportPrompt],
        namespace_line: import_write.NamespaceLine | None,
    ) -> import_write.ChunkResult:
        """Store prompts that have no record, atomically, marked as imported (import_write)."""
        await self._list(ns)
        keys = self._import_keys(ns, [p.prompt_id for p in prompts])
        return await import_write.write(self.r, keys, ns, prompts, self.half_life, namespace_line)

    @redis_errors
    async def settle_import(self, ns: str, source: dict[str, float]) -> bool:
        """After a whole export's import: its float sums as they were (import_write.settle)."""
        return await import_write.settle(self.r, self._import_keys(ns, []), source)

    def _import_keys(self, ns: str, prompt_ids: Sequence[str]) -> import_write.ImportKeys:
        return import_write.ImportKeys(
            meta=self._k(ns, "meta"),
            last_visits=self._k(ns, "lv"),
            version=self._k(ns, "v"),
            imported=self._k(ns, "imported"),
            records=self._records(ns, prompt_ids),
        )

    @redis_errors
    async def import_marks(self, ns: str, prompt_ids: Sequence[str]) -> list[bytes | None]:
        """The digest of the import line that stored each prompt (None: not imported)."""
        return await self.r.hmget(self._k(ns, "imported"), list(prompt_ids))

    @redis_errors
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

    @redis_errors
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

    @redis_errors
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

    @redis_errors
    async def raw_records(self, ns: str, prompt_ids: Sequence[str]) -> list[bytes | None]:
        return await self.r.mget(self._records(ns, prompt_ids))

    @redis_errors
    async def namespaces(self) -> list[str]:
        return sorted(x.decode() for x in await self.r.smembers("krl:namespaces"))

    @redis_errors
    async def namespace_meta(self, ns: str) -> dict[str, float]:
        raw = await self.r.hgetall(self._k(ns, "meta"))
        if not raw and not await self.r.sismember("krl:namespaces", ns):
            raise NotFound(f"no namespace {ns!r}")
        meta = {k.decode(): float(v) for k, v in raw.items()}
        meta.setdefault("prompts", 0.0)
        for i in range(HIST_BINS):
            meta.setdefault(f"h{i}", 0.0)
        return meta

    @redis_errors
    async def last_visit_pairs(self, ns: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The namespace's last-visit counts as (successes, trials, prompts), what its grid
        prior is fitted to."""
        return _pairs(await self.r.hgetall(self._k(ns, "lv")))

    @redis_errors
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
