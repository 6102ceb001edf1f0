"""The slim client (krl_client) against a real allocator over loopback gRPC: the async client,
errors and retries, and the allocation session's journal that makes a resumed step report once."""

import asyncio
import math
import time

import httpx
import pytest

from krl_client import (
    AllocationSession,
    AsyncAllocationSession,
    AsyncAllocatorClient,
    InvalidArgument,
    NotFound,
    Unavailable,
)

pytestmark = pytest.mark.integration
IDS = ["a", "b", "c", "d"]


async def test_async_client_allocates_and_reports(allocator):
    target = f"127.0.0.1:{allocator.grpc.port}"
    async with AsyncAllocatorClient(target, namespace="aio") as c:
        a = await c.allocate(IDS, budget=16, min_n=2, max_n=8, step=1)
        assert list(a.n) == IDS and sum(a.n.values()) == 16 and len(a.allocation_id) == 32
        r = await c.report(a.allocation_id, {p: (1, a.n[p], 10 * a.n[p]) for p in IDS})
        assert (r.accepted, r.duplicates) == (4, 0)
        again = await c.report(a.allocation_id, {"a": (1, a.n["a"])})
        assert (again.accepted, again.duplicates, again.duplicate_prompt_ids) == (0, 1, ("a",))
        stats = await c.prompt_stats(["a", "zz"])
        assert stats[0].found and stats[0].trials == a.n["a"] and not stats[1].found
        # per-call namespace overrides the client's
        other = await c.allocate(["x"], budget=4, min_n=4, max_n=4, namespace="aio2")
        assert other.n == {"x": 4}
        with pytest.raises(InvalidArgument, match="budget"):
            await c.allocate(IDS, budget=1, min_n=2)
        with pytest.raises(NotFound):
            await c.report("0" * 32, {"a": (1, 2)})


async def test_async_client_concurrent_calls_share_one_channel(allocator):
    async with AsyncAllocatorClient(f"127.0.0.1:{allocator.grpc.port}", namespace="many") as c:
        allocs = await asyncio.gather(
            *(c.allocate([f"p{i}", f"q{i}"], budget=8, step=i) for i in range(20))
        )
    assert len({a.allocation_id for a in allocs}) == 20


async def test_unreachable_allocator_is_unavailable_after_bounded_retries():
    started = time.monotonic()
    async with AsyncAllocatorClient("127.0.0.1:9", timeout_s=1.0, retries=2, backoff_s=0.05) as c:
        with pytest.raises(Unavailable):
            await c.allocate(["a"], budget=2)
    assert time.monotonic() - started < 10


def _rewards(plan, graded: bool) -> list[float]:
    """Prompt a: all 1; b: all 0; c and d mixed (graded: 0.5s)."""
    out = []
    for pid, k in plan.n.items():
        for j in range(k):
            if pid == "a":
                out.append(1.0)
            elif pid == "b":
                out.append(0.0)
            else:
                out.append((0.5 if graded else 1.0) if j % 2 == 0 else 0.0)
    return out


async def test_session_journal_makes_a_resumed_step_report_once(allocator, tmp_path):
    # the sync client runs in a thread: the allocator serves on this test's event loop
    await asyncio.to_thread(_session_resume, allocator, tmp_path)


def _session_resume(allocator, tmp_path) -> None:
    from krl_client import AllocatorClient

    journal = tmp_path / "run" / "allocations.jsonl"
    target = f"127.0.0.1:{allocator.grpc.port}"
    with AllocatorClient(target, namespace="sess") as client:
        s = AllocationSession(client, budget_per_prompt=4, min_n=2, max_n=8, journal=journal)
        plan = s.allocate(1, IDS)
        rows = plan.expand([{"id": p} for p in IDS])
        assert (
            len(rows) == plan.total == 16 and plan.group_index()[: plan.n["a"]] == [0] * plan.n["a"]
        )
        rewards = _rewards(plan, graded=False)
        assert s.report(plan, rewards).accepted == 4
        m = s.metrics(plan, rewards)
        informative = plan.n["c"] + plan.n["d"]
        assert m["knapsack/effective_rollout_ratio"] == pytest.approx(informative / 16)
        assert m["knapsack/all_correct_ratio"] == m["knapsack/all_wrong_ratio"] == 0.25
        # the trainer crashes and resumes from a checkpoint before step 1: a new session
        resumed = AllocationSession(client, budget_per_prompt=4, min_n=2, max_n=8, journal=journal)
        again = resumed.allocate(1, IDS)
        assert again.replayed and again.allocation_id == plan.allocation_id and again.n == plan.n
        assert resumed.report(again, rewards).duplicates == 4
        with pytest.raises(ValueError, match="another run"):
            resumed.allocate(1, ["other", "ids"])
        step2 = resumed.allocate(2, IDS)
        assert not step2.replayed and step2.allocation_id != plan.allocation_id
    summary = httpx.get(f"http://127.0.0.1:{allocator.http.port}/v1/namespaces/sess").json()
    assert summary["reports"] == 1  # once, not twice
    a = httpx.get(f"http://127.0.0.1:{allocator.http.port}/v1/namespaces/sess/prompts/a").json()
    assert a["visits"] == 1


async def test_async_session_graded_rewards_and_bad_rewards(allocator):
    async with AsyncAllocatorClient(f"127.0.0.1:{allocator.grpc.port}", namespace="g") as c:
        s = AsyncAllocationSession(c, budget_per_prompt=4, min_n=4, max_n=4, success_threshold=0.5)
        plan = await s.allocate(7, IDS)
        rewards = _rewards(plan, graded=True)
        bad = list(rewards)
        bad[5] = math.nan
        with pytest.raises(ValueError, match="must be finite"):
            await s.report(plan, bad)
        with pytest.raises(ValueError, match="15 values for 16"):
            await s.report(plan, rewards[:-1])
        res = await s.report(plan, rewards, tokens=[3] * 16)
        assert res.accepted == 4
        stats = {st.prompt_id: st for st in await c.prompt_stats(IDS)}
        assert stats["c"].successes == 2 and stats["c"].trials == 4  # 0.5 >= threshold
        assert stats["a"].mean_tokens == 3.0
        m = s.metrics(plan, rewards)
        assert m["knapsack/informative_prompt_ratio"] == 0.5 and m["knapsack/n_max"] == 4


async def test_sessions_declare_their_loss_aggregation(allocator):
    """A session's loss_agg goes with every Allocate: the allocation records the objective made
    for it; an unknown one is refused when the session is made."""
    from krl_client.messages import OBJECTIVE_FOR_LOSS

    base = f"http://127.0.0.1:{allocator.http.port}/v1/namespaces/decl/allocations/"
    async with AsyncAllocatorClient(f"127.0.0.1:{allocator.grpc.port}", "decl") as client:
        for loss in ("prompt-mean", "token-mean"):
            s = AsyncAllocationSession(client, budget_per_prompt=4, loss_agg=loss)
            plan = await s.allocate(1, IDS)
            async with httpx.AsyncClient() as h:
                got = (await h.get(base + plan.allocation_id)).json()
            assert got["objective_name"] == OBJECTIVE_FOR_LOSS[loss]
        with pytest.raises(ValueError, match="loss_agg"):
            AsyncAllocationSession(client, loss_agg="token-sum")
