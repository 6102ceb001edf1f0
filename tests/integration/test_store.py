"""The history store against a real redis-server: idempotent, atomic reports and decay."""

import math
import os

import numpy as np
import pytest
import redis.asyncio as aioredis

from krl.allocator.solve.posterior import decay_factor
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
    recs = await store.prompt_records("ns", ["x", "y", "never"], step=10)
    assert [r.mean_tokens for r in recs] == [100, 200, 0]
    assert h.moments.prompts == 2
    assert h.moments.sum_p == pytest.approx(0.75)


async def test_a_retried_report_never_counts_twice(store, redis_client):
    await _alloc(store, "ns", "b" * 32, 3, {"x": 4, "y": 4})
    first = await store.report("ns", "b" * 32, [Outcome("x", 1, 4, 40)])
    snapshot = {k: redis_client.dump(k) for k in redis_client.keys("krl:{ns}:r:*")}
    again = await store.report("ns", "b" * 32, [Outcome("x", 1, 4, 40), Outcome("y", 4, 4, 40)])
    assert first.accepted == 1 and again.accepted == 1 and again.duplicates == ["x"]
    assert redis_client.dump("krl:{ns}:r:x") == snapshot[b"krl:{ns}:r:x"]
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
        assert redis.Redis.from_url(server.url).config_get("appendfsync") == {
            "appendfsync": "everysec"
        }


def test_embedded_redis_fsyncs_as_asked_and_refuses_a_policy_redis_lacks(tmp_path):
    import redis

    from krl.common.redis_server import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "r", appendfsync="always") as server:
        got = redis.Redis.from_url(server.url).config_get("appendfsync")
        assert got == {"appendfsync": "always"}
    with pytest.raises(ValueError, match="appendfsync must be one of"):
        EmbeddedRedis(tmp_path / "s", appendfsync="sometimes")
    assert not (tmp_path / "s").exists()


async def test_last_visit_counts_and_rate_follow_the_reports(store, redis_client):
    """The grid prior's data (one count per prompt, at its latest visit) and the namespace's
    success rate, kept by each report; each visit stores the rate's logit."""
    await _alloc(store, "lv", "e" * 32, 1, {"x": 8, "y": 8})
    await store.report("lv", "e" * 32, [Outcome("x", 2, 8, 0), Outcome("y", 8, 8, 0)])
    await _alloc(store, "lv", "f" * 32, 2, {"x": 8})
    await store.report("lv", "f" * 32, [Outcome("x", 4, 8, 0)])
    assert redis_client.hgetall("krl:{lv}:lv") == {b"8:8": b"1", b"4:8": b"1"}  # 2:8 is gone
    h = await store.read_batch("lv", ["x", "y", "new"], step=3)
    k, n, c = h.last_visit_pairs
    assert sorted(zip(k.tolist(), n.tolist(), c.tolist(), strict=True)) == [(4, 8, 1), (8, 8, 1)]
    keep = 1 - 1 / 512
    s = (0.25 * keep + 1.0) * keep + 0.5
    w = (1 * keep + 1) * keep + 1
    assert h.rate_logit == pytest.approx(math.log((s / w) / (1 - s / w)))
    x, y, new = h.visits
    assert x[:2, :3].tolist() == [[1, 8, 2], [2, 8, 4]] and x[2:, 1].tolist() == [-1] * 6
    assert x[1, 3] == round(1000 * h.rate_logit)
    assert y[0, :3].tolist() == [1, 8, 8] and (new[:, 1] == -1).all()


async def test_an_empty_outcome_is_no_evidence_and_does_not_block_the_real_one(store):
    """trials = 0 neither records a visit nor marks the prompt reported (defect D3)."""
    await _alloc(store, "d3", "1" * 32, 0, {"x": 4})
    res = await store.report("d3", "1" * 32, [Outcome("x", 0, 0, 0)])
    assert res.accepted == 0 and res.duplicates == []
    res = await store.report("d3", "1" * 32, [Outcome("x", 3, 4, 0)])
    assert res.accepted == 1 and res.duplicates == []
    (rec,) = await store.prompt_records("d3", ["x"], 0)
    assert (rec.visits, rec.trials, rec.successes) == (1, 4, 3)


async def test_a_duplicate_report_does_not_count_as_a_report(store):
    """The namespace's report counter moves only when something was accepted (defect D10)."""
    await _alloc(store, "d10", "2" * 32, 0, {"x": 4})
    await store.report("d10", "2" * 32, [Outcome("x", 1, 4, 0)])
    await store.report("d10", "2" * 32, [Outcome("x", 1, 4, 0)])
    assert (await store.namespace_meta("d10"))["reports"] == 1


async def test_a_fully_reported_allocation_is_kept_only_for_retries(redis_server, redis_client):
    client = aioredis.Redis.from_url(redis_server.url)
    store = HistoryStore(client, half_life_steps=0, allocation_ttl_s=86400, reported_ttl_s=120)
    try:
        await _alloc(store, "mem", "d" * 32, 0, {"x": 4, "y": 4, "z": 0})
        key = "krl:{mem}:a:" + "d" * 32
        await store.report("mem", "d" * 32, [Outcome("x", 1, 4, 0)])
        assert redis_client.ttl(key) > 86000  # y is still open
        await store.report("mem", "d" * 32, [Outcome("y", 2, 4, 0)])  # z has n = 0
        assert 0 < redis_client.ttl(key) <= 120 and 0 < redis_client.ttl(key + ":r") <= 120
        again = await store.report("mem", "d" * 32, [Outcome("y", 2, 4, 0)])
        assert again.duplicates == ["y"] and again.accepted == 0
    finally:
        await client.aclose()


async def test_allocations_beyond_the_cap_are_dropped_oldest_first(redis_server, redis_client):
    client = aioredis.Redis.from_url(redis_server.url)
    store = HistoryStore(client, half_life_steps=0, allocation_ttl_s=86400, allocations_kept=3)
    try:
        ids = [f"{i:032d}" for i in range(5)]
        for i, a in enumerate(ids):
            await _alloc(store, "cap", a, i, {"x": 2})
        for a in ids[:2]:
            with pytest.raises(NotFound):
                await store.report("cap", a, [Outcome("x", 1, 2, 0)])
        assert (await store.report("cap", ids[2], [Outcome("x", 1, 2, 0)])).accepted == 1
        assert [x.decode() for x in redis_client.lrange("krl:{cap}:allocs", 0, -1)] == ids[:1:-1]
        assert len(redis_client.keys("krl:{cap}:a:*")) == 3 + 1  # 3 hashes, 1 reported set
        assert (await store.get_allocation("cap", "latest"))["allocation_id"] == ids[4]
    finally:
        await client.aclose()


async def test_concurrent_reports_of_the_same_prompts_each_count_once(store, monkeypatch):
    """Reports interleave at every await (WATCH, read, MULTI); a commit in between aborts the
    others' MULTI and they read again, so no update is lost and none counts twice."""
    import asyncio

    from krl.allocator.store import report_write

    attempts = []
    once = report_write._once

    async def counted(*args, **kwargs):
        attempts.append(1)
        return await once(*args, **kwargs)

    monkeypatch.setattr(report_write, "_once", counted)

    ids = [f"p{i}" for i in range(40)]
    allocs = [f"{i + 500:032x}" for i in range(8)]
    for i, a in enumerate(allocs):
        await _alloc(store, "race", a, i, dict.fromkeys(ids, 4))
    results = await asyncio.gather(
        *(
            store.report("race", a, [Outcome(p, i % 5, 4, 10) for p in ids])
            for i, a in enumerate(allocs)
        )
    )
    assert [r.accepted for r in results] == [40] * 8
    assert len(attempts) > 8  # some were aborted by another's commit and read again
    recs = await store.prompt_records("race", ids, 0)
    assert {(r.visits, r.trials, r.successes) for r in recs} == {
        (8, 32, sum(i % 5 for i in range(8)))
    }
    assert all(sorted(s for s, _, _ in r.recent) == list(range(8)) for r in recs)
    meta = await store.namespace_meta("race")
    assert meta["prompts"] == 40 and meta["reports"] == 8
    assert sum(meta[f"h{i}"] for i in range(10)) == 40


async def test_a_report_that_keeps_conflicting_gives_up_and_stores_nothing(
    store, redis_client, monkeypatch
):
    """Another writer commits between every read and write (a real SET of the namespace's
    report version, as a report of another allocator does): after ATTEMPTS tries the report is
    refused with ABORTED, nothing stored. (Every other try finds its cached records of an old
    version and reads them again before it computes.)"""
    from krl.allocator.store import record_update, report_write
    from krl.common.errors import Aborted

    await _alloc(store, "busy", "9" * 32, 0, {"x": 4})
    real = record_update.apply
    calls = []

    def interfering(*args, **kwargs):
        calls.append(1)
        redis_client.set("krl:{busy}:v", os.urandom(16))
        return real(*args, **kwargs)

    monkeypatch.setattr(record_update, "apply", interfering)
    with pytest.raises(Aborted, match="conflicted"):
        await store.report("busy", "9" * 32, [Outcome("x", 1, 4, 0)])
    assert report_write.ATTEMPTS // 2 <= len(calls) <= report_write.ATTEMPTS
    assert redis_client.get("krl:{busy}:r:x") is None
    assert redis_client.scard("krl:{busy}:a:" + "9" * 32 + ":r") == 0


async def test_a_record_of_another_size_is_refused_not_misread(store, redis_client):
    """Every report and import writes whole records; a value of another size under a record key
    (written by something else) is FAILED_PRECONDITION naming the size, for reads and reports,
    and nothing is written."""
    import struct

    from krl.allocator.store.record import RECORD_BYTES
    from krl.common.errors import FailedPrecondition

    head = struct.pack("<11d", 3, 1, 5, 1, 4, 3, 3, 4, 4, 40, 0)
    short = head + struct.pack("<4i", 5, 4, 3, 120)
    redis_client.set("krl:{odd}:r:x", short)
    with pytest.raises(FailedPrecondition, match=f"{len(short)} bytes, not {RECORD_BYTES}"):
        await store.read_batch("odd", ["x", "y"], step=5)
    await _alloc(store, "odd", "8" * 32, 6, {"x": 4})
    with pytest.raises(FailedPrecondition, match="bytes"):
        await store.report("odd", "8" * 32, [Outcome("x", 2, 4, 40)])
    assert redis_client.get("krl:{odd}:r:x") == short


async def test_a_redis_that_became_a_replica_is_unavailable_and_the_retry_counts_once(
    store, redis_client
):
    """A failover demotes the node under a report: Redis refuses its MULTI whole (READONLY,
    EXECABORT). That is UNAVAILABLE (clients retry it), nothing is written, and the report
    retried once the node takes writes again counts once."""
    from krl.common.errors import Unavailable

    await _alloc(store, "ro", "7" * 32, 0, {"x": 4, "y": 4})
    redis_client.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that is not there
    try:
        with pytest.raises(Unavailable, match="failing over"):
            await store.report("ro", "7" * 32, [Outcome("x", 1, 4, 0), Outcome("y", 2, 4, 0)])
    finally:
        redis_client.execute_command("REPLICAOF", "NO", "ONE")
    assert redis_client.get("krl:{ro}:r:x") is None
    res = await store.report("ro", "7" * 32, [Outcome("x", 1, 4, 0), Outcome("y", 2, 4, 0)])
    assert res.accepted == 2 and res.duplicates == []
    (rec,) = await store.prompt_records("ro", ["x"], 0)
    assert rec.visits == 1
