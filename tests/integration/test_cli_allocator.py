"""`krl allocator` as the README runs it: a separate process with its embedded Redis."""

import contextlib
import signal
import subprocess
import sys
import urllib.request

import pytest
import redis

from krl.common.procs import free_port, wait_serving
from krl_client import AllocatorClient

pytestmark = pytest.mark.integration


def test_the_allocator_process_serves_and_stops_cleanly(tmp_path):
    data = tmp_path / "redis"
    proc, target, _ = _start(data)
    try:
        wait_serving(target, 60, proc)
        with AllocatorClient(target, namespace="cli") as c:
            a = c.allocate(["a", "b"], 6, min_n=1, max_n=4)
            assert sum(a.n.values()) == 6
            assert c.report(a.allocation_id, {"a": (1, a.n["a"])}).accepted == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"data in {data}" in out and "allocator ready" in out and "allocator stopped" in out
    assert (data / "appendonlydir").exists() or (data / "appendonly.aof").exists()


def test_wait_serving_accepts_a_job_that_already_finished_only_when_asked(tmp_path):
    """krl up's trainer may finish a resumed run before its health is polled: exit 0 then is
    not an error for it, and still is for a service."""
    import subprocess
    import sys

    from krl.common.procs import free_port, wait_serving

    target = f"127.0.0.1:{free_port()}"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    wait_serving(target, 5.0, done, exit_ok=True)
    with pytest.raises(RuntimeError, match="exited with 0 before serving"):
        wait_serving(target, 5.0, done)
    failed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    failed.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_serving(target, 5.0, failed, exit_ok=True)


def test_with_start_runs_one_process_and_stops_it(tmp_path):
    """`with ServiceProcess(...).start():` started the service twice and leaked the first
    (every `krl bench rollout` left a `krl rollout` running)."""
    from krl.common.procs import allocator_process

    svc = allocator_process(tmp_path)
    started = svc.start()
    first = svc.proc
    with started as same:
        assert same is svc and svc.proc is first and first.poll() is None
    assert first.poll() is not None  # stopped on leaving, and no other was started


def _start(data, *extra, gport: int | None = None, hport: int | None = None):
    gport, hport = gport or free_port(), hport or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "krl.cli",
            "allocator",
            "--grpc-port",
            str(gport),
            "--http-port",
            str(hport),
            "--data-dir",
            str(data),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"127.0.0.1:{gport}", f"http://127.0.0.1:{hport}"


def _gone(pid: int, within_s: float) -> bool:
    import os
    import time

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _trials(c: AllocatorClient) -> dict[str, int]:
    return {s.prompt_id: s.trials for s in c.prompt_stats(["a", "b"])}


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_embedded_redis_dies_with_a_killed_allocator_and_a_restart_keeps_the_data(tmp_path):
    """D4: SIGKILL of the allocator orphaned its redis-server, and the next start ran a second
    one on the same append-only file."""
    data = tmp_path / "redis"
    # always: with everysec a write held behind a slow fsync is lost to a kill -9 (Redis's rule)
    durable = ("--redis-appendfsync", "always")
    proc, target, _ = _start(data, *durable)
    try:
        wait_serving(target, 60, proc)
        with AllocatorClient(target, namespace="d4") as c:
            a = c.allocate(["a", "b"], 6, min_n=1, max_n=4)
            c.report(a.allocation_id, {"a": (1, a.n["a"]), "b": (0, a.n["b"])})
        redis_pid = int((data / "redis.pid").read_text())
        embedded = redis.Redis(unix_socket_path=str(data / "redis.sock"))
        assert embedded.config_get("appendfsync") == {"appendfsync": "always"}
        embedded.close()
        proc.kill()
        proc.wait(10)
        assert _gone(redis_pid, 5), "the embedded redis-server outlived its allocator"
        proc, target, _ = _start(data, *durable)
        wait_serving(target, 60, proc)
        with AllocatorClient(target, namespace="d4") as c:
            assert _trials(c) == {"a": a.n["a"], "b": a.n["b"]}  # the AOF replayed
    finally:
        proc.kill()
        proc.communicate(timeout=30)


@contextlib.contextmanager
def _first_allocator(data):
    """An allocator serving; on leaving, it must still serve, and stop cleanly."""
    first, target, http_url = _start(data)
    try:
        wait_serving(target, 60, first)
        yield first, target, http_url
        with AllocatorClient(target, namespace="x") as c:  # the first one is untouched
            assert sum(c.allocate(["a"], 2, min_n=1, max_n=4).n.values()) == 2
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


def _refused(data, **ports) -> str:
    second, _, _ = _start(data, **ports)
    out, _ = second.communicate(timeout=60)
    assert second.returncode != 0, out
    return out


def test_a_second_allocator_on_the_same_data_folder_refuses_to_start(tmp_path):
    with _first_allocator(tmp_path / "redis") as (first, _, _):
        out = _refused(tmp_path / "redis")
        assert "is in use by another process" in out and f"pid {first.pid}" in out, out


def test_a_dead_embedded_redis_is_restarted_and_readyz_tells(tmp_path):
    """D12: a dead embedded Redis was never restarted and /healthz kept answering 200."""
    import os
    import time

    data = tmp_path / "redis"
    proc, target, http = _start(data)
    try:
        wait_serving(target, 60, proc)
        with AllocatorClient(target, namespace="d12") as c:
            a = c.allocate(["a", "b"], 6, min_n=1, max_n=4)
            c.report(a.allocation_id, {"a": (1, a.n["a"])})
        # appendfsync everysec: Redis may hold an acknowledged write back from the AOF for up
        # to 2 s while an earlier fsync is slow (a busy disk), and a kill -9 then loses it
        time.sleep(2.5)
        pid = int((data / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        assert _status(f"{http}/readyz") == 503
        deadline = time.monotonic() + 20
        while _status(f"{http}/readyz") != 200:
            assert time.monotonic() < deadline, "the embedded Redis was not restarted"
            time.sleep(0.1)
        assert int((data / "redis.pid").read_text()) != pid
        with AllocatorClient(target, namespace="d12") as c:
            assert _trials(c)["a"] == a.n["a"]
            assert sum(c.allocate(["a", "b"], 6, min_n=1, max_n=4).n.values()) == 6
        # the supervisor counts the restart once its own readiness wait returns, which may be
        # a moment after /readyz (a ping) sees the new server
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"{http}/metrics", timeout=5) as r:
                text = r.read().decode()
            if "krl_allocator_embedded_redis_restarts_total 1.0" in text:
                break
            assert "krl_allocator_embedded_redis_restarts_total 0.0" in text, text[-400:]
            assert time.monotonic() < deadline, "the restart was not counted"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_a_redis_server_orphaned_on_the_folder_is_stopped_before_a_new_one_starts(tmp_path):
    from krl.common.redis_server import EmbeddedRedis

    data = tmp_path / "redis"
    orphan = EmbeddedRedis(data).start()
    orphan._unlock()  # as if its owner had died without the parent-death signal
    proc, target, _ = _start(data)
    try:
        wait_serving(target, 60, proc)
        assert orphan.proc.wait(10) is not None
        assert int((data / "redis.pid").read_text()) != orphan.proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "orphaned" in out


def test_a_second_allocator_on_a_port_in_use_refuses_to_start(tmp_path):
    """gRPC's SO_REUSEPORT let a second allocator share the first one's port: clients were
    split between two servers with different histories."""
    with _first_allocator(tmp_path / "a") as (_, target, http_url):
        port = target.rsplit(":", 1)[1]
        out = _refused(tmp_path / "b", gport=int(port))
        assert f"cannot serve gRPC on 127.0.0.1:{port}" in out and "in use" in out, out
        hport = http_url.rsplit(":", 1)[1]
        out = _refused(tmp_path / "c", hport=int(hport))
        assert f"cannot serve HTTP on 127.0.0.1:{hport}" in out, out


def test_an_allocate_at_the_max_n_limit_does_not_stall_the_allocator(tmp_path):
    """An Allocate with max_n 2,802 built its objective table on the event loop for 15 s (at
    the 4,096 limit ~35 s, and each new max_n built another): /healthz and every other request
    waited. Now one table serves every max_n up to its size, built off the event loop."""
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor

    proc, target, http = _start(tmp_path / "redis")
    try:
        wait_serving(target, 60, proc)

        def allocate(max_n: int) -> int:
            body = json.dumps({"budget": 1758, "max_n": max_n, "prompt_ids": ["a", "b", "c"]})
            req = urllib.request.Request(
                f"{http}/v1/namespaces/big/allocations",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status

        worst = 0.0
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(allocate, 4096)
            while not first.done():
                t = time.perf_counter()
                assert _status(f"{http}/healthz") == 200
                worst = max(worst, time.perf_counter() - t)
                time.sleep(0.05)
            assert first.result() == 201
        assert worst < 1.0, worst
        t = time.perf_counter()
        assert allocate(2802) == 201 and allocate(3000) == 201
        assert time.perf_counter() - t < 2.0  # slices of the same table
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
