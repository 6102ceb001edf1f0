"""Load shedding on the real allocator: past max_inflight_allocations an Allocate is refused
with RESOURCE_EXHAUSTED and a retry hint (gRPC trailing metadata, HTTP Retry-After); clients
honour the hint and retry, while a RESOURCE_EXHAUSTED without one (a size refusal) is final."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from krl.allocator.app import AllocatorApp
from krl_client import AllocatorClient, ResourceExhausted
from krl_client.errors import RETRY_AFTER_KEY
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
IDS = [f"p{i}" for i in range(20_000)]


@pytest.fixture
async def busy_allocator(redis_server):
    app = AllocatorApp(make_settings(redis_server.url, max_inflight_allocations=1))
    await app.start()
    yield app
    await app.stop()


def _burst(target: str, k: int, retries: int) -> tuple[int, list[BaseException]]:
    ok, errors, lock = [0], [], threading.Lock()

    def one() -> None:
        try:
            with AllocatorClient(target, namespace="shed", retries=retries, backoff_s=0.01) as c:
                c.allocate(IDS, 2 * len(IDS), min_n=1, max_n=4)
            with lock:
                ok[0] += 1
        except Exception as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok[0], errors


async def test_excess_allocations_are_shed_with_a_hint_and_clients_retry(busy_allocator):
    target = f"127.0.0.1:{busy_allocator.grpc.port}"
    ok, errors = await asyncio.to_thread(_burst, target, 6, 0)
    assert ok >= 1 and errors and all(isinstance(e, ResourceExhausted) for e in errors)
    hinted = [e.__cause__ for e in errors]
    assert all(dict(e.trailing_metadata()).get(RETRY_AFTER_KEY) for e in hinted)
    ok, errors = await asyncio.to_thread(_burst, target, 6, 30)  # the clients honour the hint
    assert (ok, errors) == (6, [])


async def test_http_sheds_with_429_and_retry_after(busy_allocator):
    url = f"http://127.0.0.1:{busy_allocator.http.port}/v1/namespaces/shed/allocations"
    body = {"prompt_ids": IDS, "budget": 2 * len(IDS), "min_n": 1, "max_n": 4}
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(*(http.post(url, json=body) for _ in range(6)))
    codes = sorted(r.status_code for r in answers)
    assert 201 in codes and 429 in codes, codes
    shed = next(r for r in answers if r.status_code == 429)
    assert shed.headers["retry-after"] == "1" and shed.json()["status"] == 429


async def test_a_size_refusal_is_not_retried(busy_allocator) -> None:
    """gRPC refuses a message over the channel limit with RESOURCE_EXHAUSTED and no hint: the
    client gives up at once (it would fail the same way each time)."""
    import time

    target = f"127.0.0.1:{busy_allocator.grpc.port}"

    def call() -> float:
        with AllocatorClient(
            target, namespace="shed", retries=5, backoff_s=1.0, max_message_bytes=4096
        ) as c:
            t = time.monotonic()
            with pytest.raises(ResourceExhausted):
                c.allocate(IDS[:2000], 4000, min_n=1, max_n=4)
            return time.monotonic() - t

    assert await asyncio.to_thread(call) < 0.5  # one retry would sleep >= 0.5 s
