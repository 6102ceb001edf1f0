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
