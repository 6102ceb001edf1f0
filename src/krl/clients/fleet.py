"""RolloutFleet: one client over every rollout service behind a target, so a trainer uses all
of them: a Generate is split across the members by rollouts (sum of n) and their groups merged
as they finish; a weight push goes to every member. With one member it is a RolloutClient.

Targets: "host:port"; a list "h1:p1,h2:p2"; or "dns:///name:port", whose addresses (all A /
AAAA records: a Kubernetes headless Service lists one per pod) are resolved again at each weight
push, so pods that come and go are found, and a new pod serves only once it has the weights."""

from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from krl.clients.rollout import Group, Info, PromptSpec, RolloutClient
from krl_client.errors import Unavailable

log = logging.getLogger(__name__)
DNS = "dns:///"


def resolve(target: str) -> list[str]:
    """The member targets of a fleet target, sorted (stable order, stable split)."""
    if target.startswith(DNS):
        host, _, port = target[len(DNS) :].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{target!r}: expected dns:///name:port")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise Unavailable(f"cannot resolve {host!r}: {e}") from e
        addrs = {i[4][0] for i in infos}
        return sorted(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addrs)
    members = [t.strip() for t in target.split(",") if t.strip()]
    if not members:
        raise ValueError("empty rollout target")
    return sorted(set(members))


def split(prompts: Sequence[PromptSpec], k: int) -> list[list[int]]:
    """Indices of `prompts` for each of k members, balanced by rollouts (largest first, each to
    the least loaded member: within max n of the best split)."""
    parts: list[list[int]] = [[] for _ in range(k)]
    load = [0] * k
    for i in sorted(range(len(prompts)), key=lambda i: -prompts[i].n):
        j = min(range(k), key=lambda j: (load[j], j))
        parts[j].append(i)
        load[j] += max(prompts[i].n, 1)
    return [sorted(p) for p in parts]


class RolloutFleet:
    def __init__(self, target: str, **kw) -> None:
        """kw: as for RolloutClient (token, timeout_s, retries, backoff_s, ...)."""
        self.target, self._kw = target, kw
        self.members: dict[str, RolloutClient] = {}
        self._sync_members()

    def _sync_members(self) -> None:
        wanted = resolve(self.target)
        for gone in set(self.members) - set(wanted):
            self.members.pop(gone).close()
        for t in wanted:
            if t not in self.members:
                self.members[t] = RolloutClient(t, **self._kw)
        if len(wanted) > 1:
            log.info("rollout fleet %s: %d members", self.target, len(wanted))

    def _each(self, fn) -> list:
        clients = list(self.members.values())
        if len(clients) == 1:
            return [fn(clients[0])]
        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(fn, clients))

    def info(self) -> Info:
        infos = self._each(lambda c: c.info())
        first = infos[0]
        return Info(
            first.engine,
            first.model,
            min(i.policy_version for i in infos),
            sum(i.replicas for i in infos),
            min(i.max_n for i in infos),
            min(i.max_context_tokens for i in infos),
        )

    def wait_ready(self, timeout_s: float = 120.0) -> Info:
        self._each(lambda c: c.wait_ready(timeout_s))
        return self.info()

    def push_weights(self, version: int, **kw) -> float:
        """Every member gets the weights (resolved afresh); the slowest load time."""
        self._sync_members()
        return max(self._each(lambda c: c.push_weights(version, **kw)))

    def generate(self, prompts: Sequence[PromptSpec], **kw) -> Iterator[Group]:
        clients = list(self.members.values())
        if len(clients) == 1:
            yield from clients[0].generate(prompts, **kw)
            return
        work = [(c, p) for c, p in zip(clients, split(prompts, len(clients)), strict=True) if p]
        out: queue.Queue = queue.Queue()
        stop = threading.Event()

        def run(client: RolloutClient, part: list[int]) -> None:
            try:
                for g in client.generate([prompts[i] for i in part], **kw):
                    if stop.is_set():
                        return
                    out.put(_reindex(g, part[g.index]))
                out.put(None)
            except BaseException as e:  # handed to the caller's thread
                out.put(e)

        threads = [threading.Thread(target=run, args=cp, daemon=True) for cp in work]
        for t in threads:
            t.start()
        try:
            done = 0
            while done < len(threads):
                item = out.get()
                if item is None:
                    done += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()

    def close(self) -> None:
        for c in self.members.values():
            c.close()

    def __enter__(self) -> RolloutFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reindex(g: Group, index: int) -> Group:
    return dataclasses.replace(g, index=index)
