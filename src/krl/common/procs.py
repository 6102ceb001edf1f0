"""Start a service as a child process and wait until its gRPC health check says SERVING;
stop it by pid. Used by benchmarks, tests and (later) `krl up`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from krl.common.parentdeath import dying_with_parent
from krl_client.channel import RECONNECT_OPTIONS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(
    target: str,
    timeout_s: float = 30.0,
    proc: subprocess.Popen | None = None,
    exit_ok: bool = False,
) -> None:
    """Until `target` answers health SERVING. A process that exits first is an error, unless
    `exit_ok` and it exited 0 (a job that finished its work before it was polled)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target, options=RECONNECT_OPTIONS) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            if proc is not None and proc.poll() is not None:
                if exit_ok and proc.returncode == 0:
                    return
                raise RuntimeError(f"process exited with {proc.returncode} before serving")
            try:
                res = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if res.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not serving after {timeout_s}s")
            time.sleep(0.05)


class ServiceProcess:
    def __init__(
        self,
        args: Sequence[str],
        grpc_target: str,
        log_file: Path | None = None,
        env: dict[str, str] | None = None,
        new_session: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        """die_with_parent: the service is killed when the thread that starts it exits (its
        starter was SIGKILLed), so no orphan keeps a port or a GPU; start it from a thread that
        lives as long as the service should."""
        self.new_session = new_session
        self.die_with_parent = die_with_parent
        self.args = [sys.executable, "-m", "krl.cli", *args]
        self.target = grpc_target
        self.log_file = log_file
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = ""  # the service's HTTP address, where the starter knows it

    def start(self, timeout_s: float = 60.0, exit_ok: bool = False) -> ServiceProcess:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            dying_with_parent(self.args) if self.die_with_parent else self.args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=self.new_session,
        )
        wait_serving(self.target, timeout_s, self.proc, exit_ok)
        return self

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> ServiceProcess:
        # `with svc.start(...)` must not start a second process (the first would leak)
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def allocator_process(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    """A `krl allocator` (not started) on free loopback ports, its log in folder/allocator.log;
    with no --redis-url among args, its embedded Redis keeps data in folder/redis. The HTTP
    address is its `http` attribute."""
    gport, hport = free_port(), free_port()
    data = [] if "--redis-url" in args else ["--data-dir", str(folder / "redis")]
    proc = ServiceProcess(
        ["allocator", "--grpc-port", str(gport), "--http-port", str(hport), *data, *args],
        f"127.0.0.1:{gport}",
        log_file=folder / "allocator.log",
        env=env,
    )
    proc.http = f"http://127.0.0.1:{hport}"
    return proc
