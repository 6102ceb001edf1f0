"""The allocator on a real Redis Cluster (Debian's redis-server 7: 3 masters + 3 replicas on
loopback): every script declares its keys, a namespace lives in one slot, and a failover of the
namespace's master under report load loses and double-counts nothing."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter

import pytest

from krl.common.procs import allocator_process
from krl_client import AllocatorClient
from tests.redis_cluster import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def allocator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("alloc")
    svc = allocator_process(tmp, "--redis-url", cluster.url).start(60)
    yield svc.target, svc.http, tmp / "allocator.log"
    svc.stop()


def test_the_allocator_finds_the_cluster_and_serves_namespaces_on_several_slots(
    cluster: Cluster, allocator
) -> None:
    import json
    import urllib.request

    target, http, log = allocator
    assert "cluster mode" in log.read_text()
    slots = set()
    for ns in ("alpha", "beta", "gamma", "delta"):
        slots.add(cluster.client(cluster.ports[0]).cluster("keyslot", f"krl:{{{ns}}}:meta"))
        with AllocatorClient(target, namespace=ns) as c:
            ids = [f"{ns}-{i}" for i in range(40)]
            a = c.allocate(ids, 160, min_n=1, max_n=8)
            assert c.report(a.allocation_id, {p: (1, a.n[p]) for p in ids}).accepted == 40
            again = c.report(a.allocation_id, {ids[0]: (1, a.n[ids[0]])})
            assert again.duplicate_prompt_ids == (ids[0],)
            assert sum(s.trials for s in c.prompt_stats(ids)) == 160
        with urllib.request.urlopen(f"{http}/v1/namespaces/{ns}/prompts?limit=1000") as r:
            assert sorted(json.loads(r.read())["prompt_ids"]) == sorted(ids)
    assert len(slots) >= 2  # the namespaces really are spread over the masters
    with urllib.request.urlopen(f"{http}/v1/namespaces") as r:
        assert {"alpha", "beta", "gamma", "delta"} <= set(json.loads(r.read()))


def _load(target: str, ns: str, stop: threading.Event, acked: Counter, errors: list) -> None:
    rng = random.Random(ns)
    ids = [f"{ns}-{i}" for i in range(48)]
    with AllocatorClient(target, namespace=ns, retries=12, backoff_s=0.02, timeout_s=5) as c:
        while not stop.is_set():
            try:
                a = c.allocate(ids, 192, min_n=1, max_n=8)
                outcomes = {p: (rng.randint(0, n), n) for p, n in a.n.items() if n}
                res = c.report(a.allocation_id, outcomes)
            except Exception as e:  # a lost allocation or an exhausted retry: recorded, shown
                errors.append(repr(e))
                continue
            for p, (_, n) in outcomes.items():
                if p not in res.duplicate_prompt_ids:
                    acked[p] += n


def _run_load(target: str, namespaces: list[str], during) -> tuple[dict[str, Counter], list]:
    stop = threading.Event()
    acked = {ns: Counter() for ns in namespaces}
    errors: list[str] = []
    threads = [
        threading.Thread(target=_load, args=(target, ns, stop, acked[ns], errors))
        for ns in namespaces
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        during()
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    return acked, errors


def _wait_for_master(cluster: Cluster, key: str, port: int, timeout_s: float = 30) -> None:
    """Until `port` serves the slot of `key` (the cluster's view may be torn mid-failover)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if cluster.roles_of_slot(key)[0] == port:
                return
        assert time.monotonic() < deadline, f"{port} did not take over the slot of {key}"
        time.sleep(0.05)


def _stored(target: str, ns: str, ids: list[str]) -> Counter:
    with AllocatorClient(target, namespace=ns) as c:
        return Counter({s.prompt_id: s.trials for s in c.prompt_stats(ids) if s.trials})


def test_a_failover_of_the_namespaces_master_under_report_load_loses_and_doubles_nothing(
    cluster: Cluster, allocator
) -> None:
    target = allocator[0]
    namespaces = ["fo-a", "fo-b", "fo-c"]
    master, replica = cluster.roles_of_slot("krl:{fo-a}:meta")

    def failover() -> None:
        # The replica takes over the namespace's slots (CLUSTER FAILOVER: the master stops
        # taking writes, the replica catches up, then they swap), while the clients report.
        cluster.client(replica).execute_command("CLUSTER", "FAILOVER")
        _wait_for_master(cluster, "krl:{fo-a}:meta", replica)

    acked, errors = _run_load(target, namespaces, failover)
    assert not errors, errors[:3]
    for ns in namespaces:
        ids = [f"{ns}-{i}" for i in range(48)]
        assert sum(acked[ns].values()) > 0
        assert _stored(target, ns, ids) == acked[ns], ns
    assert cluster.roles_of_slot("krl:{fo-a}:meta")[0] == replica != master


def test_a_crashed_master_is_replaced_and_nothing_is_lost_or_counted_twice(
    cluster: Cluster, allocator
) -> None:
    """kill -9 of the namespace's master: the replica is elected (cluster-node-timeout 1 s)
    while clients retry UNAVAILABLE; a report retried after the crash counts once. (Replication
    is asynchronous: a write acknowledged in the instant before the crash could in principle be
    lost; on loopback the replica's feed leaves with the reply, and this test has seen none.)"""
    target = allocator[0]
    namespaces = ["kill-a", "kill-b", "kill-c"]
    master, replica = cluster.roles_of_slot("krl:{kill-a}:meta")

    def crash() -> None:
        cluster.kill(master)
        _wait_for_master(cluster, "krl:{kill-a}:meta", replica)

    acked, errors = _run_load(target, namespaces, crash)
    assert not errors, errors[:3]
    for ns in namespaces:
        ids = [f"{ns}-{i}" for i in range(48)]
        assert sum(acked[ns].values()) > 0
        assert _stored(target, ns, ids) == acked[ns], ns
