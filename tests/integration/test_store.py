"""The history store against a real redis-server: idempotent, atomic reports and decay."""

import numpy as np
import pytest
import redis.asyncio as aioredis
from krl.allocator.history import decay_factor
from krl.allocator.store import HistoryStore, Outcome

from krl.common.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    yield HistoryStore(client, half_life_steps=10, allocation_ttl_s=3600)
    await client.aclose()


async def _alloc(store, ns, alloc_id, step, n):
    await store.save_allocation(ns, alloc_id, step, {"step": step}, n)


async def test_report_then_read_back_with_decay(store):
    await _alloc(store, "ns", "a" * 32, 0, {"x": 8, "y": 8})
    res = await store.report("ns", "a" * 32, [Outcome("x", 6, 8, 800), Outcome("y", 0, 8, 1600)])
    assert res.accepted == 2 and res.duplicates == []
    h = await store.read_batch("ns", ["x", "y", "never"], step=10)
    half = float(decay_factor(10, 0, 10))
    assert half == pytest.approx(0.5)
    np.testing.assert_allclose(h.evidence_successes, [6 * half, 0, 0])
    np.testing.assert_allclose(h.evidence_failures, [2 * half, 8 * half, 0])
    assert h.last_trials.tolist() == [8, 8, 0]
    np.testing.assert_allclose(h.mean_tokens[:2], [100, 200])
    assert np.isnan(h.mean_tokens[2])
    assert h.moments.prompts == 2
    assert h.moments.sum_p == pytest.approx(0.75)


async def test_a_retried_report_never_counts_twice(store, redis_client):
    await _alloc(store, "ns", "b" * 32, 3, {"x": 4, "y": 4})
    first = await store.report("ns", "b" * 32, [Outcome("x", 1, 4, 40)])
    snapshot = {k: redis_client.dump(k) for k in redis_client.keys("krl:{ns}:p:*")}
    again = await store.report("ns", "b" * 32, [Outcome("x", 1, 4, 40), Outcome("y", 4, 4, 40)])
    assert first.accepted == 1 and again.accepted == 1 and again.duplicates == ["x"]
    assert redis_client.dump("krl:{ns}:p:x") == snapshot[b"krl:{ns}:p:x"]
    (rec,) = await store.prompt_records("ns", ["x"], 0)
    assert (rec.visits, rec.trials, rec.successes, rec.recent) == (1, 4, 1, [(3, 4, 1)])


async def test_a_rejected_report_changes_nothing(store, redis_client):
    await _alloc(store, "ns", "c" * 32, 0, {"x": 4, "y": 4})
    before = {k: redis_client.dump(k) for k in redis_client.keys("*")}
    with pytest.raises(InvalidArgument, match="not part of allocation"):
        await store.report("ns", "c" * 32, [Outcome("x", 1, 4, 0), Outcome("zzz", 1, 4, 0)])
    with pytest.raises(InvalidArgument, match="more trials than the 4"):
        await store.report("ns", "c" * 32, [Outcome("x", 1, 4, 0), Outcome("y", 1, 5, 0)])
    with pytest.raises(NotFound):
        await store.report("ns", "d" * 32, [Outcome("x", 1, 4, 0)])
    assert {k: redis_client.dump(k) for k in redis_client.keys("*")} == before


async def test_namespace_aggregates_match_a_recount(store):
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(50)]
    for step in range(6):
        aid = f"{step:032x}"
        await _alloc(store, "agg", aid, step, dict.fromkeys(ids, 8))
        outs = [Outcome(pid, int(rng.integers(0, 9)), 8, 80) for pid in ids]
        await store.report("agg", aid, outs)
    h = await store.read_batch("agg", ids, 5)
    p = h.evidence_successes / (h.evidence_successes + h.evidence_failures)
    assert h.moments.prompts == 50
    assert h.moments.sum_p == pytest.approx(p.sum(), rel=1e-9)
    assert h.moments.sum_p2 == pytest.approx((p * p).sum(), rel=1e-9)
    meta = await store.namespace_meta("agg")
    assert sum(meta[f"h{i}"] for i in range(10)) == 50
    recs = await store.prompt_records("agg", ids, 0)
    assert meta["solved"] == sum(r.last_successes == r.last_trials for r in recs)
    assert meta["unsolved"] == sum(r.last_successes == 0 for r in recs)
    assert all(len(r.recent) == 6 for r in recs)


async def test_recent_visits_are_capped(store):
    for step in range(12):
        aid = f"{step + 100:032x}"
        await _alloc(store, "cap", aid, step, {"x": 2})
        await store.report("cap", aid, [Outcome("x", step % 3 % 2, 2, 5)])
    (rec,) = await store.prompt_records("cap", ["x"], 0)
    assert [s for s, _, _ in rec.recent] == list(range(4, 12))
    assert rec.visits == 12 and rec.trials == 24


def test_embedded_redis_starts_from_a_deep_data_folder(tmp_path):
    import redis

    from krl.common.redis_server import EmbeddedRedis

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedRedis(deep) as server:
        assert len(str(deep / "redis.sock")) > 107
        assert redis.Redis.from_url(server.url).ping()
        assert (deep / "redis.log").exists()
