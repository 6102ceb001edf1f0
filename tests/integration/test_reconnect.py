"""A client sees a restarted service soon after it is back, however long it was down: gRPC's
default reconnect backoff grows to 120 s, so after 11 s of downtime a channel with the defaults
waits up to ~5 s more before it tries again (the next attempts fall near 9 and 16 s), failing
every retry of ours meanwhile. A real gRPC server on loopback, started late."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from krl.common.procs import free_port
from krl_client.channel import GrpcClient

pytestmark = pytest.mark.integration

DOWN_S = 11.5


def _ok(stub) -> bool:
    try:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        return True
    except grpc.RpcError:
        return False


def test_a_client_reconnects_within_a_second_of_a_late_server():
    target = f"127.0.0.1:{free_port()}"
    client = GrpcClient(target)
    stub = health_pb2_grpc.HealthStub(client._channel)
    t0 = time.monotonic()
    while time.monotonic() - t0 < DOWN_S:  # callers retrying against a service that is down
        assert not _ok(stub)
        time.sleep(0.1)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(target)
    server.start()
    try:
        up = time.monotonic()
        while not _ok(stub):
            assert time.monotonic() - up < 5.0, "no reconnect within 5 s"
            time.sleep(0.05)
        assert time.monotonic() - up < 1.5
    finally:
        server.stop(0)
        client.close()


def test_retries_are_capped_and_an_outage_is_logged(caplog):
    """Each wait is capped (six retries from 0.05 s doubling would wait ~1.6-4.7 s in all; capped
    at 0.05 s they wait under 0.5 s), and from the third retry on each one is a warning that names
    the target, the code and the attempt; the token never appears."""
    import logging

    from krl_client.errors import Unavailable

    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = GrpcClient(target, token="s3cret", retries=6, backoff_s=0.05, max_backoff_s=0.05)
    stub = health_pb2_grpc.HealthStub(client._channel)
    caplog.set_level(logging.DEBUG, logger="krl_client")
    t0 = time.monotonic()
    with pytest.raises(Unavailable):
        client._call(stub.Check, health_pb2.HealthCheckRequest(), timeout_s=1.0)
    elapsed = time.monotonic() - t0
    client.close()
    assert elapsed < 1.2, elapsed
    records = [r for r in caplog.records if r.name == "krl_client"]
    assert [r.levelno for r in records] == [logging.DEBUG] * 2 + [logging.WARNING] * 4
    last = records[-1].getMessage()
    assert last.startswith(f"{target} answered UNAVAILABLE") and "retry 6 of 6 in 0." in last
    assert not [r for r in records if "s3cret" in r.getMessage()]


def test_a_long_wait_is_capped_whatever_the_attempt():
    client = GrpcClient("127.0.0.1:9", backoff_s=0.5, max_backoff_s=10.0)
    try:
        waits = [client._backoff(a) for a in (0, 4, 5, 20, 1000) for _ in range(50)]
        assert max(waits) < 15.0 and min(waits) >= 0.25
        assert max(client._backoff(0) for _ in range(50)) < 0.75
        with pytest.raises(ValueError, match="max_backoff_s >= backoff_s"):
            GrpcClient("127.0.0.1:9", backoff_s=2.0, max_backoff_s=1.0)
    finally:
        client.close()
