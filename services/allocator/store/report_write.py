"""A report's write to Redis: atomic, counted once, and without Lua on the hot path.

Under WATCH of the allocation, its reported set and the namespace's report version (which every
report's and import's MULTI sets to a fresh random token, record_cache.py), it reads what
the report changes in one round trip (what this process already holds at that version is not
read again), validates it (a rejected report writes nothing), computes the new records and
namespace aggregates in numpy (record_update) and writes them in one MULTI. A report committed
in between aborts the MULTI (WatchError) and the report is read again. Only reports write
records, the aggregates and the last-visit counts, so the version guards all of them (an
Allocate only increments the meta hash's count of allocations, which no report writes).

No Lua script: the per-prompt arithmetic is far cheaper in numpy here than in Redis's Lua, and
one version key is watched instead of every record key (Redis checks each watched key on every
write; docs/PERFORMANCE.md has the figures)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from krl.allocator.store import record_update
from krl.allocator.store.record_cache import (
    META_FIELDS,
    AllocationCache,
    NamespaceState,
    RecordCache,
    version_of,
)
from krl.allocator.store.watched import Watched, watched
from krl.common.errors import Aborted, InvalidArgument, NotFound
from krl_client.messages import Outcome

FLOAT_FIELDS = frozenset((*record_update.FLOAT_AGGREGATES, "rate_s", "rate_w"))
ATTEMPTS = 16
"""Reads and writes of one report before it gives up on concurrent reports of its namespace."""


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


@dataclass(frozen=True)
class ReportResult:
    accepted: int
    duplicates: list[str]


@dataclass(frozen=True)
class ReportKeys:
    allocation: str
    reported: str
    meta: str
    last_visits: str
    version: str
    records: list[str]


@dataclass(frozen=True)
class ReportTTL:
    open_s: int
    """The reported set's TTL while prompts are still open."""
    done_s: int
    """The allocation's and its set's TTL once every prompt with n > 0 is reported."""


async def write(
    r,
    keys: ReportKeys,
    alloc_id: str,
    ns: str,
    cols,
    half_life: float,
    ttl: ReportTTL,
    known: Known,
):
    """Record `cols` (OutcomeColumns) for allocation `alloc_id`; see the module."""
    for _ in range(ATTEMPTS):
        async with watched(r) as w:
            try:
                done = await _once(w, keys, alloc_id, ns, cols, half_life, ttl, known)
            except _StaleCache:
                continue
            if done is not None:
                return done
    raise Aborted(
        f"the report of allocation {alloc_id!r} conflicted with concurrent reports of namespace "
        f"{ns!r} {ATTEMPTS} times; nothing was stored, retry it"
    )


class _StaleCache(Exception):
    """The cached records are of another version of the namespace: read them all again."""


@dataclass(frozen=True)
class Known:
    """What this process knows of Redis, to read less: records and its own allocations."""

    records: RecordCache
    allocations: AllocationCache


async def _once(w: Watched, keys: ReportKeys, alloc_id, ns, cols, half_life, ttl, known: Known):
    """The report, or None when another report committed first (read it all again)."""
    ids = cols.prompt_ids
    cached = known.records.lookup(ns, ids)
    mine = known.allocations.get(keys.allocation)
    reads: list = [
        ("HMGET", keys.allocation, "_step", *(() if mine else ("_n", "_open"))),
        ("PTTL", keys.allocation),
        ("SMISMEMBER", keys.reported, *ids),
        ("SCARD", keys.reported),
        ("GET", keys.version),
    ]
    if cached.state is None:
        reads += [("HMGET", keys.meta, *META_FIELDS), ("HGETALL", keys.last_visits)]
    if cached.need:
        reads.append(("MGET", *(keys.records[i] for i in cached.need)))
    got = await w.read((keys.allocation, keys.reported, keys.version), reads)
    alloc, pttl, seen, reported, token_read = got[:5]
    version = version_of(token_read)
    read_state = NamespaceState.from_replies(got[5], got[6]) if cached.state is None else None
    if pttl == -2 or alloc[0] is None:
        raise NotFound(f"no allocation {alloc_id!r} in namespace {ns!r} (unknown or expired)")
    fetched = got[-1] if cached.need else []
    if not known.records.settle(ns, version, cached, ids, fetched, read_state):
        raise _StaleCache
    state = cached.state
    if mine:
        step, allotted, opened = mine
    else:
        step, allotted = int(alloc[0]), json.loads(alloc[1])
        opened = int(alloc[2]) if alloc[2] is not None else open_prompts(allotted)
    check_allotted(cols, allotted, alloc_id)
    # a group with no scored rollout is no evidence: neither recorded nor marked reported, so
    # the real outcome sent later still counts
    scored, seen = cols.trials > 0, np.array(seen, dtype=bool)
    dups = [ids[i] for i in np.flatnonzero(scored & seen)]
    fresh = np.flatnonzero(scored & ~seen).tolist()
    if not fresh:
        return ReportResult(0, dups)
    old = state.meta
    up = record_update.apply(
        [cached.raws[i] for i in fresh],
        cols.successes[fresh],
        cols.trials[fresh],
        cols.total_tokens[fresh],
        int(step),
        half_life,
        (old["rate_s"], old["rate_w"]),
    )
    factor, add_s, add_w = up.rate
    new_meta = {"rate_s": old["rate_s"] * factor + add_s, "rate_w": old["rate_w"] * factor + add_w}
    new_meta |= {k: old[k] + float(d) for k, d in up.floats.items()}
    new_meta |= {k: float(int(old[k]) + d) for k, d in up.counts.items()}
    counts = dict(state.last_visits)
    lv_set: list = []
    lv_del: list = []
    for f, d in up.last_visits.items():
        key = f.encode()
        c = counts.get(key, 0) + d
        if c > 0:
            lv_set += (key, c)
            counts[key] = c
        else:
            lv_del.append(key)
            counts.pop(key, None)
    token = uuid.uuid4().bytes
    pairs: list = [None] * (2 * len(fresh))
    pairs[0::2] = [keys.records[i] for i in fresh]
    pairs[1::2] = up.new_raws
    fresh_ids = [ids[i] for i in fresh]
    writes: list = [
        ("MSET", *pairs),
        ("SADD", keys.reported, *fresh_ids),
        ("HSET", keys.meta, *(x for k, v in new_meta.items() for x in (k, stored_field(k, v)))),
        ("HINCRBY", keys.meta, "reports", 1),
        ("SET", keys.version, token),
        ("EXPIRE", keys.reported, ttl.open_s),
    ]
    if lv_set:
        writes.append(("HSET", keys.last_visits, *lv_set))
    if lv_del:
        writes.append(("HDEL", keys.last_visits, *lv_del))
    # Fully reported: keep it only as long as retries may come (the memory policy).
    if reported + len(fresh) >= opened and pttl > ttl.done_s * 1000:
        writes += [("EXPIRE", keys.allocation, ttl.done_s), ("EXPIRE", keys.reported, ttl.done_s)]
    if not await w.commit(writes):
        return None
    new_state = NamespaceState({**old, **new_meta}, counts)
    new_version = version_of(token)
    known.records.wrote(ns, version, new_version, fresh_ids, up.new_raws, new_state)
    return ReportResult(len(fresh), dups)


def stored_field(name: str, value: float) -> str:
    """A meta value as stored: counts as integers (HINCRBY may move them), sums exactly."""
    return repr(value) if name in FLOAT_FIELDS else str(int(value))


def open_prompts(allotted: dict[str, int]) -> int:
    """Prompts with n > 0: what a report must answer for before the allocation is done."""
    return len(allotted) - list(allotted.values()).count(0)


def check_allotted(cols, allotted: dict[str, int], alloc_id: str) -> None:
    """The first outcome, in order, that is not in the allocation or has more trials than it
    was allotted."""
    n = np.fromiter((allotted.get(pid, -1) for pid in cols.prompt_ids), np.int64, len(cols))
    bad = np.flatnonzero((n < 0) | (cols.trials > n))
    if not bad.size:
        return
    i = int(bad[0])
    pid = cols.prompt_ids[i]
    if n[i] < 0:
        raise InvalidArgument(
            f"prompt {pid!r} is not part of allocation {alloc_id!r}", field="outcomes.prompt_id"
        )
    raise InvalidArgument(
        f"prompt {pid!r} reports more trials than the {n[i]} it was allotted",
        field="outcomes.trials",
    )
