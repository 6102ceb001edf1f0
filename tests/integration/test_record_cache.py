"""The records an allocator process holds (record_cache.py) against a real redis-server: used
only at the namespace's current report version, so another allocator's report, or a Redis that
went back to older data, is read, never hidden."""

import numpy as np
import pytest
import redis.asyncio as aioredis

from krl.allocator.store import HistoryStore, Outcome

pytestmark = pytest.mark.integration
IDS = [f"q{i}" for i in range(30)]


@pytest.fixture
async def stores(redis_server):
    """Two allocator processes' stores on one Redis (a second replica), and one that caches
    nothing."""
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(3)]
    sizes = (64 << 20, 64 << 20, 0)
    yield [
        HistoryStore(c, half_life_steps=0, allocation_ttl_s=3600, record_cache_bytes=b)
        for c, b in zip(clients, sizes, strict=True)
    ]
    for c in clients:
        await c.aclose()


async def _round(store, step, k):
    aid = f"{step + 7000:032x}"
    await store.save_allocation("c", aid, step, {}, dict.fromkeys(IDS, 4))
    res = await store.report("c", aid, [Outcome(p, (k + i) % 5, 4, 8) for i, p in enumerate(IDS)])
    assert res.accepted == len(IDS)


def _same(a, b) -> None:
    for name in ("evidence_successes", "evidence_failures", "last_successes", "last_trials"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.visits, b.visits)
    assert a.moments == b.moments and a.rate_logit == b.rate_logit
    for x, y in zip(a.last_visit_pairs, b.last_visit_pairs, strict=True):
        np.testing.assert_array_equal(x, y)


async def test_records_held_are_used_and_equal_what_redis_holds(stores):
    mine, _, uncached = stores
    await _round(mine, 0, 0)
    hits = mine.known.records.hits
    first = await mine.read_batch("c", IDS, 1)
    assert mine.known.records.hits - hits == len(IDS)  # the report's own records, not read
    _same(first, await uncached.read_batch("c", IDS, 1))
    await _round(mine, 1, 2)
    _same(
        await mine.read_batch("c", [*IDS, "new"], 2),
        await uncached.read_batch("c", [*IDS, "new"], 2),
    )


async def test_another_allocators_report_is_read_not_the_held_records(stores):
    mine, other, uncached = stores
    await _round(mine, 0, 0)
    await mine.read_batch("c", IDS, 1)
    await _round(other, 1, 3)  # mine holds step-0 records; the version moved on
    misses = mine.known.records.misses
    seen = await mine.read_batch("c", IDS, 2)
    assert mine.known.records.misses - misses == len(IDS)
    _same(seen, await uncached.read_batch("c", IDS, 2))
    assert (seen.visits[:, 1, 0] == 1).all()  # the other's visit at step 1
    await _round(mine, 2, 1)  # mine reports on top of the other's records: nothing lost
    (rec,) = await uncached.prompt_records("c", ["q0"], 0)
    assert [s for s, _, _ in rec.recent] == [0, 1, 2] and rec.visits == 3


async def test_a_redis_back_at_older_data_is_read_again(stores, redis_client):
    """A restart from an older snapshot: its records and its version are both older, and the
    version differs from the one the held records were read at."""
    mine, _, uncached = stores
    await _round(mine, 0, 0)
    keys = [b"krl:{c}:v", *(f"krl:{{c}}:r:{p}".encode() for p in IDS)]
    snapshot = {k: redis_client.dump(k) for k in keys}
    await _round(mine, 1, 4)
    await mine.read_batch("c", IDS, 2)
    for k, v in snapshot.items():
        redis_client.restore(k, 0, v, replace=True)
    seen = await mine.read_batch("c", IDS, 2)
    _same(seen, await uncached.read_batch("c", IDS, 2))
    assert (seen.visits[:, 1, 1] == -1).all()  # one visit each, as the snapshot had


async def test_the_cache_keeps_within_its_memory(redis_server):
    from krl.allocator.store.record_cache import ENTRY_BYTES

    client = aioredis.Redis.from_url(redis_server.url)
    store = HistoryStore(
        client, half_life_steps=0, allocation_ttl_s=3600, record_cache_bytes=40 * ENTRY_BYTES
    )
    try:
        for ns in ("a", "b", "c"):
            await store.read_batch(ns, IDS, 0)  # 30 prompts each; room for 40
        assert store.known.records._entries <= 40
        assert store.known.records.lookup("c", IDS).need == []  # the newest stays
        assert len(store.known.records.lookup("a", IDS).need) == len(IDS)
    finally:
        await client.aclose()


def test_the_allocations_held_keep_within_their_prompts():
    from krl.allocator.store.record_cache import AllocationCache

    held = AllocationCache(max_prompts=100)
    for i in range(5):
        held.put(f"a{i}", i, {f"p{j}": 2 for j in range(40)}, 40)
    assert [held.get(f"a{i}") is not None for i in range(5)] == [False, False, False, True, True]
    held.put("big", 9, {f"p{j}": 2 for j in range(500)}, 500)  # over the budget alone: kept
    assert held.get("big") is not None and held.get("a4") is None
    off = AllocationCache(max_prompts=0)
    off.put("a", 0, {"p": 2}, 1)
    assert off.get("a") is None
