"""The allocator's HTTP write path, prompt listing, export and import, over real HTTP and gRPC
on loopback against a real Redis: HTTP and gRPC agree, retries count once, bad input is a 400
naming the field and leaves Redis untouched."""

import asyncio
import json

import httpx
import pytest

from krl.allocator.app import AllocatorApp
from krl_client import AsyncAllocatorClient

pytestmark = pytest.mark.integration
IDS = [f"q{i}" for i in range(12)]


def http(app: AllocatorApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}")


async def _history(http_client: httpx.AsyncClient, ns: str, rounds: int) -> None:
    """Reports through HTTP: prompt qi succeeds i times in 12 each round."""
    for step in range(1, rounds + 1):
        body = {"prompt_ids": IDS, "budget": 144, "min_n": 12, "max_n": 12, "step": step}
        a = (await http_client.post(f"/v1/namespaces/{ns}/allocations", json=body)).json()
        outs = [{"prompt_id": p, "successes": i, "trials": 12} for i, p in enumerate(IDS)]
        r = await http_client.post(
            f"/v1/namespaces/{ns}/allocations/{a['allocation_id']}/outcomes",
            json={"outcomes": outs},
        )
        assert r.json()["accepted"] == 12


async def test_http_and_grpc_allocate_the_same_and_a_retried_report_counts_once(allocator):
    async with http(allocator) as h:
        await _history(h, "web", 2)
        body = {"prompt_ids": IDS, "budget": 64, "min_n": 2, "max_n": 16, "step": 3}
        r = await h.post("/v1/namespaces/web/allocations", json=body)
        assert r.status_code == 201
        got = r.json()
        assert set(got["n"]) == set(IDS) and sum(got["n"].values()) <= 64
        assert got["mode"] == "eb" and got["budget"] == 64 and got["reported_prompts"] == 0
        # the answer is built from what was stored, not read back: GET sees the same
        assert (await h.get(f"/v1/namespaces/web/allocations/{got['allocation_id']}")).json() == got
        async with AsyncAllocatorClient(f"127.0.0.1:{allocator.grpc.port}", "web") as c:
            g = await c.allocate(IDS, 64, min_n=2, max_n=16, step=3)
        assert g.n == got["n"]  # same request, same solve
        assert len(set(got["n"].values())) > 1  # and not uniform: the history matters
        # the same report twice (a client retry): counted once
        outs = {"outcomes": [{"prompt_id": "q3", "successes": 1, "trials": got["n"]["q3"]}]}
        url = f"/v1/namespaces/web/allocations/{got['allocation_id']}/outcomes"
        first, again = (await h.post(url, json=outs)).json(), (await h.post(url, json=outs)).json()
        assert (first["accepted"], first["duplicates"]) == (1, 0)
        assert (again["accepted"], again["duplicates"], again["duplicate_prompt_ids"]) == (
            0,
            1,
            ["q3"],
        )
        summary = (await h.get("/v1/namespaces/web")).json()
        assert summary["reports"] == 3  # two history rounds + one, not two
        p = (await h.get("/v1/namespaces/web/prompts/q3")).json()
        assert p["visits"] == 3 and p["trials"] == 24 + got["n"]["q3"]


async def test_the_namespace_summary_shows_the_grid_prior_mode_eb_allocates_from(allocator):
    """Prompts that mostly succeed give a grid prior with a high mean, prompts that mostly fail
    a low one; the prior follows the last visits (q_i succeeds i times in 12: mean 5.5/12)."""
    async with http(allocator) as h:
        for ns, k in (("prior-easy", 11), ("prior-hard", 1)):
            body = {"prompt_ids": IDS, "budget": 144, "min_n": 12, "max_n": 12, "step": 1}
            a = (await h.post(f"/v1/namespaces/{ns}/allocations", json=body)).json()
            outs = [{"prompt_id": p, "successes": k, "trials": 12} for p in IDS]
            url = f"/v1/namespaces/{ns}/allocations/{a['allocation_id']}/outcomes"
            assert (await h.post(url, json={"outcomes": outs})).status_code == 200
        await _history(h, "prior-spread", 1)
        easy, hard, spread = [
            (await h.get(f"/v1/namespaces/{ns}")).json()
            for ns in ("prior-easy", "prior-hard", "prior-spread")
        ]
    assert easy["eb_prior_mean"] > 0.8 and hard["eb_prior_mean"] < 0.2
    assert abs(spread["eb_prior_mean"] - 5.5 / 12) < 0.05
    assert spread["eb_prior_sd"] > max(easy["eb_prior_sd"], hard["eb_prior_sd"])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("allocations", {"prompt_ids": ["a"], "budget": 1, "min_n": 2}, "budget"),
        ("allocations", {"prompt_ids": ["a", "a"], "budget": 8}, "prompt_ids[1]"),
        ("allocations", {"prompt_ids": ["a"], "budget": 8, "mode": "magic"}, "mode"),
        ("allocations", {"prompt_ids": ["a"], "budget": 8, "loss_agg": "sum"}, "loss_agg"),
        ("allocations", {"prompt_ids": ["a"], "budget": 8, "extra": 1}, "extra"),
        ("allocations", {"prompt_ids": ["a"], "budget": 8, "max_n": 10**6}, "max_n"),
        ("allocations", {"prompt_ids": ["a"], "budget": 8, "step": -1}, "step"),
        ("allocations", {"budget": 8}, "prompt_ids"),
    ],
)
async def test_bad_allocate_is_a_400_naming_the_field(allocator, path, body, field):
    async with http(allocator) as h:
        r = await h.post(f"/v1/namespaces/web/{path}", json=body)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["field"] == field, r.json()
        assert (await h.get("/v1/namespaces")).json() == []  # nothing stored


async def test_bad_report_leaves_redis_untouched(allocator):
    async with http(allocator) as h:
        body = {"prompt_ids": ["a", "b"], "budget": 8, "min_n": 4, "max_n": 4}
        a = (await h.post("/v1/namespaces/web/allocations", json=body)).json()
        url = f"/v1/namespaces/web/allocations/{a['allocation_id']}/outcomes"
        bad = [
            (
                {"outcomes": [{"prompt_id": "a", "successes": 5, "trials": 4}]},
                "outcomes[0].successes",
            ),
            ({"outcomes": [{"prompt_id": "a", "successes": 1, "trials": 9}]}, "outcomes.trials"),
            (
                {"outcomes": [{"prompt_id": "zz", "successes": 1, "trials": 2}]},
                "outcomes.prompt_id",
            ),
            (
                {"outcomes": [{"prompt_id": "a", "successes": "x", "trials": 2}]},
                "outcomes.0.successes",
            ),
            ({"outcomes": []}, "outcomes"),
        ]
        for body, field in bad:
            r = await h.post(url, json=body)
            assert r.status_code == 400 and r.json()["field"] == field, r.json()
        r = await h.post(
            "/v1/namespaces/web/allocations/" + "0" * 32 + "/outcomes",
            json={"outcomes": [{"prompt_id": "a", "successes": 1, "trials": 2}]},
        )
        assert r.status_code == 404
        s = (await h.get("/v1/namespaces/web")).json()
        assert (s["prompts_tracked"], s["reports"]) == (0, 0)


async def test_auth_covers_the_write_path(redis_server):
    from tests.conftest import make_settings

    app = AllocatorApp(make_settings(redis_server.url, auth_token="s3cret-token"))
    await app.start()
    try:
        async with http(app) as h:
            body = {"prompt_ids": ["a"], "budget": 4}
            r = await h.post("/v1/namespaces/web/allocations", json=body)
            assert r.status_code == 401
            ok = await h.post(
                "/v1/namespaces/web/allocations",
                json=body,
                headers={"Authorization": "Bearer s3cret-token"},
            )
            assert ok.status_code == 201
    finally:
        await app.stop()


async def test_prompt_listing_pages_through_every_prompt_once(allocator):
    ids = [f"p{i}:x*" for i in range(230)]  # ids with glob characters and colons
    async with http(allocator) as h:
        body = {"prompt_ids": ids, "budget": 460, "min_n": 2, "max_n": 2}
        a = (await h.post("/v1/namespaces/list/allocations", json=body)).json()
        outs = [{"prompt_id": p, "successes": 1, "trials": 2} for p in ids]
        await h.post(
            f"/v1/namespaces/list/allocations/{a['allocation_id']}/outcomes",
            json={"outcomes": outs},
        )
        seen, cursor, pages = [], 0, 0
        while True:
            page = (
                await h.get("/v1/namespaces/list/prompts", params={"cursor": cursor, "limit": 50})
            ).json()
            seen += page["prompt_ids"]
            pages += 1
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert sorted(seen) == sorted(ids) and pages > 1
        assert (await h.get("/v1/namespaces/nope/prompts")).status_code == 404


async def test_export_then_import_restores_the_allocation(allocator):
    async with http(allocator) as h:
        await _history(h, "src", 3)
        r = await h.get("/v1/namespaces/src/export")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert set(lines[0]) == {"namespace"}
        assert sorted(x["prompt_id"] for x in lines[1:]) == sorted(IDS)
        q5 = next(x for x in lines[1:] if x["prompt_id"] == "q5")
        assert q5["visits"] == [{"step": s, "n": 12, "successes": 5} for s in (1, 2, 3)]
        r = await h.post("/v1/namespaces/dst/import", content=r.text)
        assert r.json() == {"prompts": 12, "visits": 36, "skipped": 0}, r.text
        # the copy allocates exactly like the original
        body = {"prompt_ids": IDS, "budget": 64, "min_n": 2, "max_n": 16, "step": 4}
        a = (await h.post("/v1/namespaces/src/allocations", json=body)).json()
        b = (await h.post("/v1/namespaces/dst/allocations", json=body)).json()
        assert a["n"] == b["n"]
        src, dst = (
            (await h.get("/v1/namespaces/src")).json(),
            (await h.get("/v1/namespaces/dst")).json(),
        )
        for k in ("prompts_tracked", "solved", "unsolved", "difficulty_histogram"):
            assert src[k] == dst[k], k
        assert dst["allocations"] == 1  # an import makes no allocation
        # the same lines again count nothing; another history for a stored prompt is refused
        again = await h.post("/v1/namespaces/dst/import", content="\n".join(map(json.dumps, lines)))
        assert again.json() == {"prompts": 0, "visits": 0, "skipped": 12}, again.text
        other = {"prompt_id": "q5", "successes": 1, "trials": 8}
        refused = await h.post("/v1/namespaces/dst/import", content=json.dumps(other))
        assert refused.status_code == 409 and "already has a history" in refused.json()["detail"]
        assert (await h.get("/v1/namespaces/dst/prompts/q5")).json()["visits"] == 3


async def test_import_of_offline_pass_rates_and_its_errors(allocator):
    async with http(allocator) as h:
        good = "\n".join(
            json.dumps({"prompt_id": f"o{i}", "successes": i, "trials": 8}) for i in range(9)
        )
        bad_cases = [
            (
                good + '\n{"prompt_id": "z", "successes": 9, "trials": 8}',
                "lines[9].visits[0].successes",
            ),
            (good + '\n{"prompt_id": "z"}', "lines[9].visits"),
            (good + "\n{not json", "lines[9]"),
            (good + '\n{"prompt_id": "o1", "successes": 1, "trials": 8}', "lines[9].prompt_id"),
            ("", "lines"),
        ]
        for body, field in bad_cases:
            r = await h.post("/v1/namespaces/off/import", content=body)
            assert r.status_code == 400 and r.json()["field"] == field, (field, r.json())
        assert (await h.get("/v1/namespaces")).json() == []  # nothing written
        r = await h.post("/v1/namespaces/off/import", content=good)
        assert r.json() == {"prompts": 9, "visits": 9, "skipped": 0}
        s = (await h.get("/v1/namespaces/off")).json()
        assert (s["prompts_tracked"], s["solved"], s["unsolved"]) == (9, 1, 1)
        # the warm start shapes the first allocation: all-solved o8 gets the least
        body = {"prompt_ids": [f"o{i}" for i in range(9)], "budget": 72, "min_n": 2, "max_n": 32}
        n = (await h.post("/v1/namespaces/off/allocations", json=body)).json()["n"]
        assert n["o8"] == min(n.values()) and n["o4"] > n["o8"]


async def test_concurrent_http_reports_of_one_allocation_count_once(allocator):
    async with http(allocator) as h:
        body = {"prompt_ids": ["a", "b"], "budget": 8, "min_n": 4, "max_n": 4}
        a = (await h.post("/v1/namespaces/web/allocations", json=body)).json()
        url = f"/v1/namespaces/web/allocations/{a['allocation_id']}/outcomes"
        outs = {
            "outcomes": [
                {"prompt_id": "a", "successes": 2, "trials": 4},
                {"prompt_id": "b", "successes": 0, "trials": 4},
            ]
        }
        res = await asyncio.gather(*(h.post(url, json=outs) for _ in range(8)))
        assert sum(r.json()["accepted"] for r in res) == 2
        assert (await h.get("/v1/namespaces/web/prompts/a")).json()["visits"] == 1


async def test_mode_uniform_over_http_and_grpc(allocator):
    """Mode uniform splits the budget evenly whatever the history, over both APIs, and its
    allocations are reported like any other's."""
    async with http(allocator) as h:
        await _history(h, "even", 2)
        body = {"prompt_ids": IDS, "budget": 50, "min_n": 2, "max_n": 16, "mode": "uniform"}
        r = await h.post("/v1/namespaces/even/allocations", json=body)
        assert r.status_code == 201, r.text
        got = r.json()
        k = 50 // len(IDS)
        assert sorted(got["n"].values(), reverse=True) == [k + 1] * (50 % len(IDS)) + [k] * (
            len(IDS) - 50 % len(IDS)
        )
        assert got["mode"] == "uniform"
        async with AsyncAllocatorClient(f"127.0.0.1:{allocator.grpc.port}", "even") as c:
            g = await c.allocate(IDS, 50, min_n=2, max_n=16, mode="uniform")
        assert g.n == got["n"]
        outs = {"outcomes": [{"prompt_id": "q3", "successes": 1, "trials": got["n"]["q3"]}]}
        url = f"/v1/namespaces/even/allocations/{got['allocation_id']}/outcomes"
        assert (await h.post(url, json=outs)).json()["accepted"] == 1
        bad = {**body, "mode": "even"}
        r = await h.post("/v1/namespaces/even/allocations", json=bad)
        assert r.status_code == 400 and r.json()["field"] == "mode", r.text


async def test_http_allocate_takes_the_loss_aggregation(allocator):
    """POST allocations with loss_agg and no objective records the objective made for that
    loss (objective_name), as gRPC does; a named objective wins."""
    from krl_client.messages import OBJECTIVE_FOR_LOSS

    async with http(allocator) as h:
        await _history(h, "lossy", 1)
        for loss, objective in OBJECTIVE_FOR_LOSS.items():
            body = {"prompt_ids": IDS, "budget": 64, "min_n": 2, "max_n": 16, "loss_agg": loss}
            r = await h.post("/v1/namespaces/lossy/allocations", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["objective_name"] == objective
        body = {**body, "objective": "paper"}
        r = await h.post("/v1/namespaces/lossy/allocations", json=body)
        assert r.json()["objective_name"] == "paper"


async def test_a_lone_surrogate_in_a_prompt_id_is_a_400_on_every_route(allocator):
    """JSON may carry "\\ud800", which no Redis key can hold: POST allocations answers a 400
    naming the id (it was a plain-text 500), as the report route does, and stores nothing."""
    async with http(allocator) as h:
        raw = '{"prompt_ids": ["ok", "bad\\ud800"], "budget": 8}'
        r = await h.post(
            "/v1/namespaces/sur/allocations",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "prompt_ids[1]" and "UTF-8" in r.json()["detail"]
        assert (await h.get("/v1/namespaces")).json() == []
