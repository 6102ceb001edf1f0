"""`krl allocator` as the README runs it: a separate process with its embedded Redis."""

import signal
import subprocess
import sys

import pytest

from krl.common.procs import free_port, wait_serving
from krl_client import AllocatorClient

pytestmark = pytest.mark.integration


def test_the_allocator_process_serves_and_stops_cleanly(tmp_path):
    gport, hport = free_port(), free_port()
    data = tmp_path / "redis"
    proc = subprocess.Popen(
        [sys.executable, "-m", "krl.cli", "allocator", "--grpc-port", str(gport), "--http-port", str(hport),
         "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_serving(f"127.0.0.1:{gport}", 60, proc)
        with AllocatorClient(f"127.0.0.1:{gport}", namespace="cli") as c:
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
    from krl.common.procs import ServiceProcess, free_port

    g, h = free_port(), free_port()
    svc = ServiceProcess(["allocator", "--grpc-port", str(g), "--http-port", str(h),
                          "--data-dir", str(tmp_path / "r")], f"127.0.0.1:{g}")  # fmt: skip
    started = svc.start()
    first = svc.proc
    with started as same:
        assert same is svc and svc.proc is first and first.poll() is None
    assert first.poll() is not None  # stopped on leaving, and no other was started
