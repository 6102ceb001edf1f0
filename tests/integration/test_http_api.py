"""The allocator's HTTP API, health and Prometheus metrics over real HTTP on loopback."""

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from krl.allocator.app import AllocatorApp
from krl_client import AllocatorClient
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


async def seed(app: AllocatorApp, ns: str = "web") -> str:
    client = AllocatorClient(f"127.0.0.1:{app.grpc.port}", namespace=ns, token=app.settings.token())
    a = await asyncio.to_thread(
        client.allocate, ["easy", "hard", "mid"], 12, step=1, min_n=2, max_n=8
    )
    await asyncio.to_thread(
        client.report, a.allocation_id, {"easy": (4, 4, 40), "hard": (0, 4, 400), "mid": (2, 4, 80)}
    )
    client.close()
    return a.allocation_id


async def test_read_endpoints(allocator):
    alloc_id = await seed(allocator)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{allocator.http.port}") as http:
        assert (await http.get("/v1/namespaces")).json() == ["web"]
        s = (await http.get("/v1/namespaces/web")).json()
        assert (s["prompts_tracked"], s["solved"], s["unsolved"]) == (3, 1, 1)
        assert sum(b["prompts"] for b in s["difficulty_histogram"]) == 3
        assert s["mean_tokens"] == pytest.approx(520 / 12)
        p = (await http.get("/v1/namespaces/web/prompts/hard")).json()
        assert p["found"] and p["trials"] == 4 and p["successes"] == 0
        assert p["recent"] == [{"step": 1, "n": 4, "successes": 0}]
        assert 0 < p["posterior_mean"] < 0.5
        easy = (await http.get("/v1/namespaces/web/prompts/easy")).json()
        assert 0 < p["eb_posterior_mean"] < easy["eb_posterior_mean"] < 1  # mode eb's posterior
        assert p["eb_posterior_sd"] > 0
        latest = (await http.get("/v1/namespaces/web/allocations/latest")).json()
        assert latest["allocation_id"] == alloc_id and latest["reported_prompts"] == 3
        assert sum(latest["n"].values()) == 12
        assert latest["objective_name"] == "sqrt-gradient"  # the server's default objective
        by_id = (await http.get(f"/v1/namespaces/web/allocations/{alloc_id}")).json()
        assert by_id == latest
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        assert "/v1/namespaces/{namespace}" in (await http.get("/openapi.json")).json()["paths"]


async def test_errors_are_problem_details(allocator):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{allocator.http.port}") as http:
        r = await http.get("/v1/namespaces/none-such")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Not found" and "none-such" in r.json()["detail"]
        r = await http.get("/v1/namespaces/bad:ns")
        assert r.status_code == 400 and r.json()["field"] == "namespace"
        r = await http.get("/v1/namespaces/web/allocations/not-an-id")
        assert r.status_code == 400 and r.json()["field"] == "allocation_id"
        r = await http.get("/v1/namespaces/web/prompts/x", params={"step": -3})
        assert r.status_code == 400 and r.json()["field"] == "step"
        r = await http.get("/v1/namespaces/web/prompts/x", params={"step": "9" * 400})  # D7
        assert r.status_code == 400 and r.json()["field"] == "step", r.text


async def test_metrics_are_real_prometheus_text(allocator):
    await seed(allocator)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{allocator.http.port}") as http:
        text = (await http.get("/metrics")).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples
    }
    assert samples[("krl_allocator_allocations_total", (("mode", "eb"),))] == 1
    assert samples[("krl_allocator_report_outcomes_total", (("result", "accepted"),))] == 3
    assert samples[("krl_allocator_zero_variance_groups_total", (("kind", "all_correct"),))] == 1
    assert samples[("krl_allocator_zero_variance_groups_total", (("kind", "all_wrong"),))] == 1
    assert samples[("krl_allocator_prompts_tracked", ())] == 3
    assert samples[("krl_allocator_prompts_solved", ())] == 1
    assert samples[("krl_allocator_prompts_unsolved", ())] == 1
    assert samples[("krl_allocator_rollouts_per_prompt_count", (("mode", "eb"),))] == 3
    assert samples[("krl_allocator_allocate_duration_seconds_count", (("mode", "eb"),))] == 1
    assert ("krl_allocator_solve_duration_seconds_count", (("mode", "eb"),)) in samples
    # the Allocate read 3 records from Redis (none yet); the report used them as held
    assert samples[("krl_allocator_record_reads_total", (("source", "redis"),))] == 3
    assert samples[("krl_allocator_record_reads_total", (("source", "held"),))] == 3
    assert samples[("krl_allocator_records_held", ())] == 3


async def test_http_auth(redis_server):
    app = AllocatorApp(make_settings(redis_server.url, auth_token="tok"))
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}") as http:
            r = await http.get("/v1/namespaces")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert (
                await http.get("/v1/namespaces", headers={"Authorization": "Bearer nope"})
            ).status_code == 401
            assert (
                await http.get("/v1/namespaces", headers={"Authorization": "Bearer tok"})
            ).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200
    finally:
        await app.stop()


async def test_readyz_fails_while_redis_is_down(tmp_path):
    from krl.common.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "r").start()
    app = AllocatorApp(make_settings(server.url, redis_timeout_s=0.5))
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}") as http:
            server.kill()
            r = await http.get("/readyz")
            assert r.status_code == 503 and "Redis is unreachable" in r.json()["detail"]
            server.start()
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await app.stop()
        server.stop()


async def test_http_refusals_are_problem_details_and_bodies_are_capped(redis_server):
    """An unknown route, a wrong method and a body over the cap get problem details like every
    other error (they were Starlette's plain JSON); the cap is max_message_bytes."""
    app = AllocatorApp(make_settings(redis_server.url, max_message_bytes=64 * 1024))
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}") as http:
            r = await http.get("/v1/no-such-route")
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
            r = await http.delete("/v1/namespaces")
            assert r.status_code == 405 and r.json()["status"] == 405
            assert "GET" in r.headers["allow"]
            ids = [f"p{i:07d}" for i in range(10_000)]  # ~120 KB of JSON
            r = await http.post(
                "/v1/namespaces/big/allocations", json={"prompt_ids": ids, "budget": 20_000}
            )
            assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
            assert (await http.get("/v1/namespaces")).json() == []  # nothing stored
            r = await http.post(
                "/v1/namespaces/big/allocations", json={"prompt_ids": ids[:100], "budget": 200}
            )
            assert r.status_code == 201
    finally:
        await app.stop()


async def test_the_openapi_document_states_problem_details_and_metrics_text(allocator):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{allocator.http.port}") as http:
        doc = (await http.get("/openapi.json")).json()
    assert "Problem" in doc["components"]["schemas"]
    ops = [(p, m, op) for p, item in doc["paths"].items() for m, op in item.items()]
    assert all("422" not in op["responses"] for _, _, op in ops)  # we answer 400, not 422
    report = doc["paths"]["/v1/namespaces/{namespace}/allocations/{allocation_id}/outcomes"]["post"]
    for code in ("400", "404", "413", "503"):
        assert "application/problem+json" in report["responses"][code]["content"], code
    ns = next(p for p in report["parameters"] if p["name"] == "namespace")
    assert ns["schema"]["pattern"].startswith("^") and ns["schema"]["pattern"].endswith("$")
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


async def test_the_token_is_checked_before_the_body_is_read(redis_server):
    """An unauthenticated POST declaring 26 MB gets its 401 after a few bytes of body: the
    server reads no more (it read and parsed the whole body first, ~230 MB of memory)."""
    app = AllocatorApp(make_settings(redis_server.url, auth_token="s3cret-token"))
    await app.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http.port)
        writer.write(
            b"POST /v1/namespaces/x/allocations HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 26000000\r\n\r\n" + b"{" * 1000
        )
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        finally:
            writer.transport.abort()
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        await app.stop()


async def test_a_chunked_body_over_the_cap_is_a_413(redis_server):
    app = AllocatorApp(make_settings(redis_server.url, max_message_bytes=64 * 1024))
    await app.start()
    try:

        async def chunks():
            yield b'{"budget": 4, "prompt_ids": ['
            for i in range(10_000):
                yield b'"p%d", ' % i
            yield b'"a"]}'

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http.port}") as http:
            json_type = {"Content-Type": "application/json"}
            r = await http.post(
                "/v1/namespaces/big/allocations", content=chunks(), headers=json_type
            )
            assert r.status_code == 413, r.text
            assert r.json()["title"] == "Content too large"
            small = await http.post(
                "/v1/namespaces/big/import",
                content=_aiter([b'{"prompt_id": "a", ', b'"successes": 1, "trials": 2}']),
            )
            assert small.json()["prompts"] == 1, small.text
            assert (await http.get("/v1/namespaces/big/prompts")).json()["prompt_ids"] == ["a"]
    finally:
        await app.stop()


async def _aiter(parts):
    for p in parts:
        yield p
