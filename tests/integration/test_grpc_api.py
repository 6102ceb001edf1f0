"""The allocator over real gRPC on loopback, with a real redis-server behind it."""

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from krl.allocator.app import AllocatorApp
from krl.common.errors import (
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from krl.common.redis_server import EmbeddedRedis
from krl_client import AllocatorClient
from krl_client.api import allocator_pb2 as pb
from krl_client.api import allocator_pb2_grpc as pb_grpc
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def target(app: AllocatorApp) -> str:
    return f"127.0.0.1:{app.grpc.port}"


async def call(fn, *args, **kw):
    return await asyncio.to_thread(fn, *args, **kw)


async def test_allocate_report_and_allocations_follow_the_histories(allocator):
    client = AllocatorClient(target(allocator), namespace="run1")
    ids = [f"q{i}" for i in range(64)]
    p_true = np.linspace(0.02, 0.98, 64)
    rng = np.random.default_rng(0)
    first = await call(client.allocate, ids, 512, step=0, min_n=2, max_n=32)
    assert set(first.n.values()) == {8}  # no history yet: every prompt looks alike
    for step in range(5):
        a = await call(client.allocate, ids, 512, step=step, min_n=2, max_n=32)
        assert sum(a.n.values()) == 512 and list(a.n) == ids
        outcomes = {
            pid: (int(rng.binomial(n, p_true[i])), n, 10 * n)
            for i, (pid, n) in enumerate(a.n.items())
        }
        res = await call(client.report, a.allocation_id, outcomes)
        assert res.accepted == 64 and res.duplicates == 0
        again = await call(client.report, a.allocation_id, outcomes)
        assert again.accepted == 0 and again.duplicates == 64
    last = await call(client.allocate, ids, 512, step=5, min_n=2, max_n=32)
    assert len(set(last.n.values())) > 1  # the histories now shape the allocation
    # the default objective (sqrt-gradient) favours the prompts near p = 1/2, whose groups carry
    # the largest gradient; the paper's p(1-p)^2 favours the hard side over the easy one
    assert last.n["q32"] > max(last.n["q0"], last.n["q63"])
    paper = await call(client.allocate, ids, 512, step=5, min_n=2, max_n=32, objective="paper")
    hard = sum(paper.n[f"q{i}"] for i in range(16))
    easy = sum(paper.n[f"q{i}"] for i in range(48, 64))
    assert hard > easy
    stats = await call(client.prompt_stats, ["q0", "nope"])
    assert stats[0].found and stats[0].visits == 5 and len(stats[0].recent) == 5
    assert not stats[1].found
    # the stats show the posterior the default mode allocates with: its mean is the p that
    # Allocate used at the same step, for every prompt
    stats = await call(client.prompt_stats, ids, 5)
    eb = np.array([s.eb_posterior_mean for s in stats])
    np.testing.assert_allclose(eb, [last.p[pid] for pid in ids], rtol=1e-9)
    assert eb[0] < eb[32] < eb[63] and all(0 < s.eb_posterior_sd < 0.5 for s in stats)
    client.close()


async def test_modes_over_grpc(allocator):
    client = AllocatorClient(target(allocator), namespace="modes")
    ids = ["a", "b", "c"]
    paper = await call(client.allocate, ids, 12, mode="paper", fallback=False)
    uniform = await call(client.allocate, ids, 13, mode="uniform", min_n=1, max_n=8)
    eb = await call(client.allocate, ids, 12, mode="eb", min_n=1, max_n=8)
    assert sum(paper.n.values()) == 12 and sum(eb.n.values()) == 12
    assert list(uniform.n.values()) == [5, 4, 4] and uniform.budget_used == 13
    with pytest.raises(ValueError, match="mode must be one of"):  # retired: refused by the client
        await call(client.allocate, ids, 12, mode="bayes")
    client.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"budget": 3}, "budget"),
        ({"budget": 17}, "budget"),
        ({"budget": 8, "min_n": 9, "max_n": 4}, "min_n"),
        ({"prompt_ids": []}, "prompt_ids"),
        ({"prompt_ids": ["a", "a"]}, "prompt_ids[1]"),
        ({"prompt_ids": ["a", ""]}, "prompt_ids[1]"),
        ({"prompt_ids": ["a", "x" * 300]}, "prompt_ids[1]"),
        ({"namespace": "bad:name"}, "namespace"),
        ({"step": -1}, "step"),
        ({"mode": 2}, "mode"),  # retired modes (bayes, tokens): reserved numbers
        ({"mode": 3}, "mode"),
    ],
)
async def test_bad_allocate_requests_are_invalid_argument(allocator, kwargs, field):
    req = {
        "namespace": "bad",
        "prompt_ids": ["a", "b"],
        "budget": 8,
        "min_n": 2,
        "max_n": 8,
        **kwargs,
    }
    async with grpc.aio.insecure_channel(target(allocator)) as ch:
        stub = pb_grpc.AllocatorServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Allocate(pb.AllocateRequest(**req))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(field + ":"), e.value.details()


async def test_bad_reports_name_the_field_and_change_nothing(allocator, redis_client):
    client = AllocatorClient(target(allocator), namespace="rep")
    a = await call(client.allocate, ["x", "y"], 8, min_n=2, max_n=8)
    before = {k: redis_client.dump(k) for k in redis_client.keys("krl:{rep}:r:*")}
    cases = [
        ({"x": (5, 4)}, InvalidArgument, "outcomes[0].successes"),
        ({"x": (-1, 4)}, InvalidArgument, "outcomes[0].successes"),
        ({"x": (1, 4), "y": (0, -2)}, InvalidArgument, "outcomes[1].trials"),
        ({"x": (1, 4, -5)}, InvalidArgument, "outcomes[0].total_tokens"),
        ({"x": (1, 4, 4 * 2**20 + 1)}, InvalidArgument, "outcomes[0].total_tokens"),  # D11
        ({"x": (1, 9)}, InvalidArgument, "outcomes.trials"),
        ({"zz": (1, 2)}, InvalidArgument, "outcomes.prompt_id"),
        ({}, InvalidArgument, "outcomes"),
    ]
    for outcomes, exc, field in cases:
        with pytest.raises(exc) as e:
            await call(client.report, a.allocation_id, outcomes)
        assert e.value.message.startswith(field + ":"), (outcomes, e.value.message)
    with pytest.raises(NotFound):
        await call(client.report, "f" * 32, {"x": (1, 2)})
    assert {k: redis_client.dump(k) for k in redis_client.keys("krl:{rep}:r:*")} == before
    client.close()


async def test_batch_over_the_limit_is_resource_exhausted(redis_server):
    app = AllocatorApp(make_settings(redis_server.url, max_batch_prompts=10))
    await app.start()
    try:
        client = AllocatorClient(target(app), namespace="big", retries=0)
        with pytest.raises(InvalidArgument, match="over the limit of 10"):
            await call(client.allocate, [str(i) for i in range(11)], 22)
        client.close()
    finally:
        await app.stop()


async def test_auth_token_is_required_but_not_for_health(redis_server):
    app = AllocatorApp(make_settings(redis_server.url, auth_token="s3cret"))
    await app.start()
    try:
        with pytest.raises(Unauthenticated):
            await call(AllocatorClient(target(app), "auth").allocate, ["a"], 2, min_n=1, max_n=4)
        with pytest.raises(Unauthenticated):
            await call(
                AllocatorClient(target(app), "auth", token="wrong").allocate,
                ["a"],
                2,
                min_n=1,
                max_n=4,
            )
        ok = await call(
            AllocatorClient(target(app), "auth", token="s3cret").allocate,
            ["a"],
            2,
            min_n=1,
            max_n=4,
        )
        assert ok.n == {"a": 2}
        async with grpc.aio.insecure_channel(target(app)) as ch:
            res = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert res.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop()


async def test_reflection_lists_the_service(allocator):
    async with grpc.aio.insecure_channel(target(allocator)) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        async for res in stub.ServerReflectionInfo(iter([req])):
            names = {s.name for s in res.list_services_response.service}
            break
    assert "krl.allocator.v1.AllocatorService" in names and "grpc.health.v1.Health" in names


async def test_redis_outage_is_unavailable_and_the_service_recovers(tmp_path):
    server = EmbeddedRedis(tmp_path / "r").start()
    app = AllocatorApp(make_settings(server.url, redis_timeout_s=0.5))
    await app.start()
    client = AllocatorClient(target(app), namespace="outage", retries=0)
    try:
        assert (await call(client.allocate, ["a", "b"], 4, min_n=2, max_n=2)).n == {"a": 2, "b": 2}
        server.kill()
        with pytest.raises(Unavailable, match="Redis is unreachable"):
            await call(client.allocate, ["a", "b"], 4, min_n=2, max_n=2)
        server.start()  # same socket, same data folder (AOF)
        a = await call(client.allocate, ["a", "b"], 4, min_n=2, max_n=2)
        assert a.n == {"a": 2, "b": 2}
    finally:
        client.close()
        await app.stop()
        server.stop()


async def test_the_client_retries_unavailable_with_backoff(tmp_path):
    server = EmbeddedRedis(tmp_path / "r").start()
    app = AllocatorApp(make_settings(server.url, redis_timeout_s=0.5))
    await app.start()
    client = AllocatorClient(target(app), namespace="retry", retries=8, backoff_s=0.05)
    try:
        server.kill()
        restart = asyncio.get_running_loop().call_later(0.4, server.start)
        a = await call(client.allocate, ["a"], 3, min_n=1, max_n=4)
        assert a.n == {"a": 3}
        restart.cancel()
    finally:
        client.close()
        await app.stop()
        server.stop()


async def test_eb_mode_spends_on_prompts_that_will_be_informative(allocator):
    """Mode eb (the default) through gRPC and Redis: after a visit each, the mixed prompts get
    more than the all-correct ones and the unsolvable ones, at the same budget; the request's
    visit_half_life and objective are checked by name."""
    client = AllocatorClient(target(allocator), namespace="eb1")
    ids = [f"e{i}" for i in range(60)]
    a = await call(client.allocate, ids, 480, step=1, min_n=2, max_n=32)
    assert set(a.n.values()) == {8}
    kinds = {pid: (0, 8) if i < 20 else (4, 8) if i < 40 else (8, 8) for i, pid in enumerate(ids)}
    await call(client.report, a.allocation_id, kinds)
    b = await call(client.allocate, ids, 480, step=2, min_n=2, max_n=32)
    assert sum(b.n.values()) == 480
    wrong, mixed, right = (np.mean([b.n[p] for p in ids[i : i + 20]]) for i in (0, 20, 40))
    assert mixed > wrong and mixed > right, (wrong, mixed, right)
    assert b.p["e25"] > 0.05 and b.p["e5"] < b.p["e25"] < b.p["e45"]
    for kw, field in (
        ({"visit_half_life": -1.0}, "visit_half_life"),
        ({"objective": "vibes"}, "objective"),
    ):
        with pytest.raises(InvalidArgument) as e:
            await call(client.allocate, ids, 480, step=3, min_n=2, max_n=32, **kw)
        assert e.value.message.startswith(field + ":"), e.value.message
    c = await call(
        client.allocate,
        ids,
        480,
        step=3,
        min_n=2,
        max_n=32,
        visit_half_life=1.0,
        objective="paper",
    )
    assert sum(c.n.values()) == 480
    client.close()


async def test_request_bounds_are_invalid_argument_and_store_nothing(allocator, redis_client):
    """A namespace with a trailing newline (D6), a step past int32 (D9), a max_n or a
    prompts x max_n over the limits (D2): INVALID_ARGUMENT naming the field, nothing stored."""
    before = set(redis_client.keys("*"))
    cases = [
        ("run1\n", {"step": 0, "max_n": 8}, "namespace"),
        ("ok", {"step": 2**31 + 5, "max_n": 8}, "step"),
        ("ok", {"step": 0, "max_n": 10**8}, "max_n"),
    ]
    for ns, kw, field in cases:
        client = AllocatorClient(target(allocator), namespace=ns)
        with pytest.raises(InvalidArgument) as e:
            await call(client.allocate, ["a"], kw["max_n"], min_n=1, **kw)
        assert e.value.message.startswith(field + ":"), e.value.message
        client.close()
    client = AllocatorClient(target(allocator), namespace="ok")
    ids = [f"c{i}" for i in range(20000)]
    with pytest.raises(InvalidArgument) as e:  # 20,000 x 4,000 cells > 2^25
        await call(client.allocate, ids, 20000 * 8, min_n=1, max_n=4000)
    assert e.value.message.startswith("max_n:") and "max_solver_cells" in e.value.message
    client.close()
    assert set(redis_client.keys("*")) == before


async def test_a_request_without_objective_gets_the_servers(redis_server):
    """The objective a request leaves unset is the server's setting (sqrt-gradient by default);
    one it names wins; an unknown one is INVALID_ARGUMENT naming the field."""
    ids = [f"q{i}" for i in range(32)]
    p_true = np.linspace(0.02, 0.98, 32)
    rng = np.random.default_rng(1)
    apps = {
        o: AllocatorApp(make_settings(redis_server.url, objective=o))
        for o in ("group-gradient", "paper")
    }
    got = {}
    for name, app in apps.items():
        await app.start()
        client = AllocatorClient(target(app), namespace="shared")
        if name == "group-gradient":  # one history for both servers (same Redis, same namespace)
            for step in range(4):
                a = await call(client.allocate, ids, 256, step=step, min_n=2, max_n=32)
                k = {
                    pid: (int(rng.binomial(n, p_true[i])), n, n)
                    for i, (pid, n) in enumerate(a.n.items())
                }
                await call(client.report, a.allocation_id, k)
        unset = await call(client.allocate, ids, 256, step=4, min_n=2, max_n=32)
        named = {
            o: await call(client.allocate, ids, 256, step=4, min_n=2, max_n=32, objective=o)
            for o in ("group-gradient", "paper")
        }
        assert unset.n == named[name].n
        got[name] = named
        with pytest.raises(InvalidArgument, match="objective"):
            await call(client.allocate, ids, 256, step=4, min_n=2, max_n=32, objective="vibes")
        client.close()
        await app.stop()
    assert got["paper"]["group-gradient"].n != got["paper"]["paper"].n


async def test_packed_and_message_forms_agree_and_are_not_mixed(allocator, redis_client):
    """Allocate answers packed arrays when asked (the client always asks) and one message per
    prompt otherwise, with the same n; a report as packed arrays counts like one as
    messages; a report mixing the forms, or with arrays of unequal length, is
    INVALID_ARGUMENT naming the field and stores nothing."""
    ids = [f"q{i}" for i in range(40)]
    base = {"namespace": "forms", "prompt_ids": ids, "budget": 320, "min_n": 2, "max_n": 32}
    async with grpc.aio.insecure_channel(target(allocator)) as ch:
        stub = pb_grpc.AllocatorServiceStub(ch)
        msgs = await stub.Allocate(pb.AllocateRequest(**base, step=1))
        packed = await stub.Allocate(pb.AllocateRequest(**base, step=1, packed=True))
        assert not packed.allocations and len(packed.n) == len(ids)
        assert [a.n for a in msgs.allocations] == list(packed.n)
        assert [a.prompt_id for a in msgs.allocations] == ids
        assert list(packed.p) == pytest.approx([a.p for a in msgs.allocations])
        bad = [
            (
                {"outcomes": [pb.PromptOutcome(prompt_id="q0", successes=1, trials=8)]},
                "outcomes",
            ),
            ({"successes": [1], "trials": [8]}, "prompt_ids"),
            ({"successes": [1, 2], "trials": [8]}, "successes"),
            ({"successes": [1], "trials": [8], "total_tokens": [1, 2]}, "total_tokens"),
        ]
        before = {k: redis_client.dump(k) for k in redis_client.keys("krl:{forms}:*")}
        for extra, field in bad:
            req = {"prompt_ids": ["q0"], **extra} if field != "prompt_ids" else extra
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ReportOutcomes(
                    pb.ReportOutcomesRequest(
                        namespace="forms", allocation_id=packed.allocation_id, **req
                    )
                )
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.value.details().startswith(field + ":"), e.value.details()
        assert {k: redis_client.dump(k) for k in redis_client.keys("krl:{forms}:*")} == before
        n = dict(zip(ids, packed.n, strict=True))
        ok = await stub.ReportOutcomes(
            pb.ReportOutcomesRequest(
                namespace="forms",
                allocation_id=packed.allocation_id,
                prompt_ids=ids,
                successes=[1] * len(ids),
                trials=[n[i] for i in ids],
            )
        )
        assert ok.accepted == len(ids)
        again = await stub.ReportOutcomes(
            pb.ReportOutcomesRequest(
                namespace="forms",
                allocation_id=packed.allocation_id,
                outcomes=[pb.PromptOutcome(prompt_id=i, successes=1, trials=n[i]) for i in ids],
            )
        )
        assert again.accepted == 0 and again.duplicates == len(ids)  # the same outcomes


async def test_the_declared_loss_picks_the_objective_made_for_it(allocator, redis_client):
    """A request that declares its loss aggregation and names no objective is solved with
    OBJECTIVE_FOR_LOSS's objective (the same n as naming it); a named objective wins; an
    unknown loss_agg is INVALID_ARGUMENT naming the field and stores nothing (sent as a raw
    message: the client refuses it before sending)."""
    from krl_client.messages import LOSS_AGGS, OBJECTIVE_FOR_LOSS

    client = AllocatorClient(target(allocator), namespace="losses")
    ids = [f"q{i}" for i in range(48)]
    p_true = np.linspace(0.02, 0.98, 48)
    rng = np.random.default_rng(2)
    for step in range(4):
        a = await call(client.allocate, ids, 384, step=step, min_n=2, max_n=48)
        k = {pid: (int(rng.binomial(n, p_true[i])), n) for i, (pid, n) in enumerate(a.n.items())}
        await call(client.report, a.allocation_id, k)
    kw = {"step": 4, "min_n": 2, "max_n": 48}
    named = {
        o: (await call(client.allocate, ids, 384, objective=o, **kw)).n
        for o in set(OBJECTIVE_FOR_LOSS.values()) | {"paper"}
    }
    assert named["group-gradient"] != named["sqrt-gradient"] != named["paper"]
    for loss in LOSS_AGGS:
        got = await call(client.allocate, ids, 384, loss_agg=loss, **kw)
        assert got.n == named[OBJECTIVE_FOR_LOSS[loss]], loss
    both = await call(client.allocate, ids, 384, loss_agg="prompt-mean", objective="paper", **kw)
    assert both.n == named["paper"] != named["group-gradient"]
    with pytest.raises(ValueError, match="loss_agg"):
        client.allocate(ids, 384, loss_agg="token-sum", **kw)
    before = set(redis_client.keys("*"))
    async with grpc.aio.insecure_channel(target(allocator)) as ch:
        stub = pb_grpc.AllocatorServiceStub(ch)
        req = pb.AllocateRequest(
            namespace="losses", prompt_ids=ids, budget=384, min_n=2, max_n=48, loss_agg="sum"
        )
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Allocate(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("loss_agg:"), e.value.details()
    assert set(redis_client.keys("*")) == before
    client.close()
