"""An import's write to Redis: per chunk of prompts one optimistic transaction (watched.py), so
each prompt is stored whole or not at all, and a retried or concurrent import counts nothing
twice.

Each imported prompt leaves a mark, krl:{ns}:imported (hash prompt id -> the digest of its import
line). In the transaction, under WATCH of the namespace's version (as a report,
report_write.py), a prompt is
  - stored when it has no record (its record, the namespace aggregates, its mark, a new
    version token, all in one MULTI);
  - skipped when it has a record and its mark is this line's digest: an earlier attempt of the
    same import stored it (an import cut off by an outage, or the same line sent twice at once);
  - refused (FailedPrecondition, 409) otherwise: it has a history of its own.
The namespace line of an export (its success rate and token sums) is applied once too, with the
mark of the whole import under the empty field (no prompt id is empty)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from krl.allocator.store import record_update
from krl.allocator.store.record_cache import META_FIELDS, NamespaceState
from krl.allocator.store.report_write import FLOAT_FIELDS, stored_field
from krl.allocator.store.watched import watched
from krl.common.errors import Aborted, FailedPrecondition

ATTEMPTS = 16
NAMESPACE_MARK = b""
"""The field of krl:{ns}:imported that marks an import's namespace line as applied."""


@dataclass(frozen=True)
class ImportPrompt:
    prompt_id: str
    digest: bytes
    """What marks this line as imported (transfer.py)."""
    record: bytes | None
    """The record to store as is (an export's), or None: replay `visits`."""
    visits: Sequence[tuple[int, int, int]] = ()
    """(step, n, successes): the visits to replay in step order, or the record's."""
    mean_tokens: float = 0.0


@dataclass(frozen=True)
class NamespaceLine:
    """An export's namespace aggregates, added to the destination's once."""

    digest: bytes
    rate_s: float
    rate_w: float
    tok_w: float
    tok_sum: float


@dataclass(frozen=True)
class ImportKeys:
    meta: str
    last_visits: str
    version: str
    imported: str
    records: list[str]


@dataclass(frozen=True)
class ChunkResult:
    stored: int
    skipped: int
    visits: int


async def write(
    r,
    keys: ImportKeys,
    ns: str,
    prompts: Sequence[ImportPrompt],
    half_life: float,
    namespace_line: NamespaceLine | None,
) -> ChunkResult:
    for _ in range(ATTEMPTS):
        async with watched(r) as w:
            done = await _once(w, keys, ns, prompts, half_life, namespace_line)
            if done is not None:
                return done
    raise Aborted(
        f"an import into namespace {ns!r} conflicted with concurrent reports {ATTEMPTS} times; "
        "the prompts stored before stay stored, retry the same import to finish it"
    )


async def _once(w, keys: ImportKeys, ns, prompts, half_life, namespace_line):
    ids = [p.prompt_id for p in prompts]
    reads = [
        ("HMGET", keys.meta, *META_FIELDS),
        ("HGETALL", keys.last_visits),
        ("MGET", *keys.records),
        ("HMGET", keys.imported, NAMESPACE_MARK, *ids),
    ]
    meta, lv, raws, marks = await w.read((keys.version,), reads)
    state = NamespaceState.from_replies(meta, lv)
    fresh = []
    for p, raw, mark in zip(prompts, raws, marks[1:], strict=True):
        if raw is None:
            fresh.append(p)
        elif mark != p.digest:
            raise FailedPrecondition(
                f"prompt {p.prompt_id!r} already has a history in namespace {ns!r}; an import "
                "only adds prompts the namespace has not seen",
                field="prompt_id",
            )
    line = namespace_line if namespace_line and marks[0] != namespace_line.digest else None
    if not fresh and line is None:
        return ChunkResult(0, len(prompts), 0)
    new_raws, up = _records(fresh, half_life, state.meta)
    old = state.meta
    rate = up.rate
    new_meta = {
        "rate_s": old["rate_s"] * rate[0] + rate[1],
        "rate_w": old["rate_w"] * rate[0] + rate[2],
    }
    new_meta |= {k: old[k] + float(d) for k, d in up.floats.items()}
    new_meta |= {k: float(int(old[k]) + d) for k, d in up.counts.items()}
    writes: list = []
    if line is not None:
        for k in ("rate_s", "rate_w", "tok_w", "tok_sum"):
            new_meta[k] = new_meta.get(k, old[k]) + getattr(line, k)
        writes.append(("HSET", keys.imported, NAMESPACE_MARK, line.digest))
    lv_set, lv_del = [], []
    for f, d in up.last_visits.items():
        key = f.encode()
        c = state.last_visits.get(key, 0) + d
        (lv_set.extend((key, c)) if c > 0 else lv_del.append(key))
    by_id = dict(zip(ids, keys.records, strict=True))
    if fresh:
        writes += [
            (
                "MSET",
                *(
                    x
                    for p, raw in zip(fresh, new_raws, strict=True)
                    for x in (by_id[p.prompt_id], raw)
                ),
            ),
            ("HSET", keys.imported, *(x for p in fresh for x in (p.prompt_id, p.digest))),
        ]
    writes.append(
        ("HSET", keys.meta, *(x for k, v in new_meta.items() for x in (k, stored_field(k, v))))
    )
    if lv_set:
        writes.append(("HSET", keys.last_visits, *lv_set))
    if lv_del:
        writes.append(("HDEL", keys.last_visits, *lv_del))
    writes.append(("SET", keys.version, uuid.uuid4().bytes))
    if not await w.commit(writes):
        return None
    visits = sum(len(p.visits) for p in fresh)
    return ChunkResult(len(fresh), len(prompts) - len(fresh), visits)


SETTLED = ("sum_p", "sum_p2", "sum_inv_t")
"""Sums that the source built report by report and an import rebuilds in another order."""


async def settle(r, keys: ImportKeys, source: dict[str, float]) -> bool:
    """Take the source's float sums as they were when the namespace now holds what the source
    held (every count equal, each sum within rounding); False, nothing written, otherwise (a
    part of an export, or into a namespace with prompts of its own)."""
    for _ in range(ATTEMPTS):
        async with watched(r) as w:
            (meta,) = await w.read((keys.version,), [("HMGET", keys.meta, *META_FIELDS)])
            now = NamespaceState.from_replies(meta, []).meta
            same = all(
                abs(now[k] - source[k]) <= 1e-9 * max(1.0, abs(source[k]))
                if k in SETTLED or k in FLOAT_FIELDS
                else now[k] == source[k]
                for k in META_FIELDS
            )
            if not same:
                return False
            fields = [x for k in SETTLED for x in (k, stored_field(k, source[k]))]
            if await w.commit(
                [("HSET", keys.meta, *fields), ("SET", keys.version, uuid.uuid4().bytes)]
            ):
                return True
    raise Aborted("the import's last step conflicted with concurrent reports; retry the import")


def _records(fresh: Sequence[ImportPrompt], half_life: float, meta: dict[str, float]):
    """The fresh prompts' records and the namespace's change: an export's records as they are,
    other lines' visits replayed oldest first as reports would apply them."""
    total = record_update.Update([])
    kept = [p for p in fresh if p.record is not None]
    if kept:
        total = _plus(total, record_update.adopt([p.record for p in kept]))
    out = {p.prompt_id: p.record for p in kept}
    replay = [p for p in fresh if p.record is None]
    recs: list[bytes | None] = [None] * len(replay)
    rate = (meta["rate_s"], meta["rate_w"])
    events = sorted((v[0], j, i) for i, p in enumerate(replay) for j, v in enumerate(p.visits))
    start = 0
    while start < len(events):
        end = start
        while end < len(events) and events[end][:2] == events[start][:2]:
            end += 1
        idx = [e[2] for e in events[start:end]]
        vis = [replay[i].visits[j] for _, j, i in events[start:end]]
        succ = np.array([v[2] for v in vis], np.float64)
        trials = np.array([v[1] for v in vis], np.float64)
        tokens = np.array([replay[i].mean_tokens for i in idx]) * trials
        up = record_update.apply(
            [recs[i] for i in idx], succ, trials, tokens, events[start][0], half_life, rate
        )
        for i, raw in zip(idx, up.new_raws, strict=True):
            recs[i] = raw
        rate = (rate[0] * up.rate[0] + up.rate[1], rate[1] * up.rate[0] + up.rate[2])
        total = _plus(total, up)
        start = end
    out |= {p.prompt_id: raw for p, raw in zip(replay, recs, strict=True)}
    return [out[p.prompt_id] for p in fresh], total


def _plus(a: record_update.Update, b: record_update.Update) -> record_update.Update:
    """Two updates one after the other, as one (deltas add; rate sums compose)."""
    floats, counts, lv = Counter(a.floats), Counter(a.counts), Counter(a.last_visits)
    floats.update(b.floats)
    counts.update(b.counts)
    lv.update(b.last_visits)
    fa, sa, wa = a.rate
    fb, sb, wb = b.rate
    return record_update.Update(
        [], dict(floats), dict(counts), dict(lv), (fa * fb, sa * fb + sb, wa * fb + wb)
    )
