"""Imports against a real allocator and a real Redis: exact round trips, counted once when sent
twice at once, finished by a retry after a Redis outage, bounded per line."""

import asyncio
import json
import random

import httpx
import pytest
import redis

from krl.allocator.app import AllocatorApp
from krl.common.redis_server import EmbeddedRedis
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def http(app: AllocatorApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}", timeout=60)


def _pass_rates(ids, seed=0) -> str:
    rng = random.Random(seed)
    return "\n".join(
        json.dumps({"prompt_id": p, "successes": rng.randint(0, 8), "trials": 8}) for p in ids
    )


async def _ragged_history(h: httpx.AsyncClient, ns: str, ids: list[str], steps: int) -> None:
    """Allocations of changing subsets, odd token counts, outcomes reported out of step order:
    records whose replay would depend on order and rounding."""
    rng = random.Random(7)
    allocs = []
    for step in range(1, steps + 1):
        part = rng.sample(ids, k=len(ids) // 2)
        body = {"prompt_ids": part, "budget": 6 * len(part), "min_n": 2, "max_n": 12, "step": step}
        allocs.append((await h.post(f"/v1/namespaces/{ns}/allocations", json=body)).json())
    rng.shuffle(allocs)
    for a in allocs:
        outs = [
            {
                "prompt_id": p,
                "successes": rng.randint(0, n),
                "trials": n,
                "total_tokens": rng.randint(1, 997) * n + rng.randint(0, n - 1),
            }
            for p, n in a["n"].items()
            if n > 0
        ]
        url = f"/v1/namespaces/{ns}/allocations/{a['allocation_id']}/outcomes"
        assert (await h.post(url, json={"outcomes": outs})).status_code == 200


async def test_export_then_import_is_exact(allocator):
    """The copy's every prompt and aggregate equal the original's, and so do its allocations
    for every objective (replayed visits gave other n: per-visit token rounding and the order
    the success rate was rebuilt in)."""
    ids = [f"p{i}" for i in range(40)] + ["line\u2028sep"]
    async with http(allocator) as h:
        await _ragged_history(h, "src", ids, 9)
        exported = (await h.get("/v1/namespaces/src/export")).text
        r = await h.post(
            "/v1/namespaces/dst/import",
            content=exported.encode(),
        )
        assert r.status_code == 200, r.text
        assert r.json()["prompts"] == len(ids)
        src, dst = [(await h.get(f"/v1/namespaces/{ns}")).json() for ns in ("src", "dst")]
        for k in ("prompts_tracked", "solved", "unsolved", "difficulty_histogram", "mean_tokens"):
            assert src[k] == dst[k], k
        for p in ids[:5] + ids[-1:]:
            a, b = [
                (await h.get(f"/v1/namespaces/{ns}/prompts/{p}")).json() for ns in ("src", "dst")
            ]
            post = [k for k in a if k.startswith("posterior")]  # from the prior's float sums
            assert [a.pop(k) for k in post] == pytest.approx([b.pop(k) for k in post], rel=1e-12)
            assert a == b, p
        for objective in ("group-gradient", "sqrt-gradient", "paper"):
            body = {
                "prompt_ids": ids,
                "budget": 300,
                "min_n": 2,
                "max_n": 32,
                "step": 12,
                "objective": objective,
            }
            a, b = [
                (await h.post(f"/v1/namespaces/{ns}/allocations", json=body)).json()["n"]
                for ns in ("src", "dst")
            ]
            assert a == b, objective
            assert len(set(a.values())) > 1


async def test_a_raw_line_separator_in_an_id_is_part_of_the_id(allocator):
    line = json.dumps({"prompt_id": "a\u2028b", "successes": 1, "trials": 4}, ensure_ascii=False)
    assert "\u2028" in line
    async with http(allocator) as h:
        r = await h.post("/v1/namespaces/ls/import", content=line.encode())
        assert r.json() == {"prompts": 1, "visits": 1, "skipped": 0}, r.text
        ids = (await h.get("/v1/namespaces/ls/prompts")).json()["prompt_ids"]
        assert ids == ["a\u2028b"]


async def test_concurrent_imports_of_one_prompt_count_it_once(allocator):
    """Import A (2,000 lines, S last) and import B (S alone) at once: S has one visit, not two;
    a third import with another history for S is refused."""
    ids = [f"x{i}" for i in range(1999)] + ["S"]
    body_a = _pass_rates(ids)
    s_line = body_a.rsplit("\n", 1)[1]
    async with http(allocator) as h:
        a, b = await asyncio.gather(
            h.post("/v1/namespaces/c/import", content=body_a),
            h.post("/v1/namespaces/c/import", content=s_line),
        )
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json()["prompts"] + b.json()["prompts"] == 2000
        assert a.json()["skipped"] + b.json()["skipped"] == 1
        s = (await h.get("/v1/namespaces/c/prompts/S")).json()
        assert (s["visits"], s["trials"]) == (1, 8)
        assert (await h.get("/v1/namespaces/c")).json()["prompts_tracked"] == 2000
        other = json.dumps({"prompt_id": "S", "successes": 0, "trials": 4})
        r = await h.post("/v1/namespaces/c/import", content=other)
        assert r.status_code == 409 and r.json()["field"] == "prompt_id"
        assert (await h.get("/v1/namespaces/c/prompts/S")).json()["trials"] == 8


async def test_an_import_cut_off_by_a_redis_outage_is_finished_by_a_retry(tmp_path):
    # always: a write held behind a slow everysec fsync would be lost to the kill -9 below
    server = EmbeddedRedis(tmp_path / "r", appendfsync="always").start()
    app = AllocatorApp(make_settings(server.url, redis_timeout_s=0.5, max_batch_prompts=50))
    await app.start()
    ids = [f"y{i}" for i in range(3000)]
    body = _pass_rates(ids, seed=3)
    try:
        async with http(app) as h:
            task = asyncio.create_task(h.post("/v1/namespaces/o/import", content=body))
            probe = redis.Redis.from_url(server.url)
            while not probe.hlen("krl:{o}:imported") and not task.done():
                await asyncio.sleep(0.005)
            server.kill()
            r = await task
            assert r.status_code == 503, r.text
            server.start()
            stored = redis.Redis.from_url(server.url).hlen("krl:{o}:imported")
            assert 0 < stored < 3000  # cut off part way
            r = await h.post("/v1/namespaces/o/import", content=body)
            assert r.status_code == 200, r.text
            assert r.json()["prompts"] + r.json()["skipped"] == 3000
            assert r.json()["skipped"] == stored
            summary = (await h.get("/v1/namespaces/o")).json()
            assert summary["prompts_tracked"] == 3000
            for p in ("y0", "y1500", "y2999"):
                got = (await h.get(f"/v1/namespaces/o/prompts/{p}")).json()
                assert (got["visits"], got["trials"]) == (1, 8), p
    finally:
        await app.stop()
        server.stop()


async def test_a_line_with_more_visits_than_kept_is_refused_before_any_write(allocator):
    visits = [{"step": s, "n": 4, "successes": 1} for s in range(2000)]
    line = json.dumps({"prompt_id": "v", "visits": visits})
    async with http(allocator) as h:
        r = await h.post("/v1/namespaces/cap/import", content=line)
        assert r.status_code == 400 and r.json()["field"] == "lines[0].visits", r.text
        assert "at most 8" in r.json()["detail"]
        assert (await h.get("/v1/namespaces")).json() == []
        eight = json.dumps({"prompt_id": "v", "visits": visits[:8]})
        assert (await h.post("/v1/namespaces/cap/import", content=eight)).json()["visits"] == 8
        keys = [k async for k in allocator.allocator.store.r.scan_iter("krl:{cap}:*")]
        assert len(keys) <= 5, keys  # meta, lv, v, imported, the record: no allocation left


async def test_a_bad_record_is_refused_naming_it(allocator):
    import base64

    async with http(allocator) as h:
        bad = base64.b64encode(b"\x00" * 10).decode()
        r = await h.post(
            "/v1/namespaces/rec/import", content=json.dumps({"prompt_id": "a", "record": bad})
        )
        assert r.status_code == 400 and r.json()["field"] == "lines[0].record", r.text
        r = await h.post(
            "/v1/namespaces/rec/import",
            content='{"namespace": {"rate_s": 2, "rate_w": 1, "tok_w": 0, "tok_sum": 0}}\n'
            + _pass_rates(["a"]),
        )
        assert r.status_code == 400 and r.json()["field"] == "namespace.rate_s", r.text
        assert (await h.get("/v1/namespaces")).json() == []
