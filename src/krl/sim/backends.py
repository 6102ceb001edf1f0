"""Where the simulator's allocations come from: the real allocator code in process (its
Allocator class over a real embedded redis-server, the same store and solver the service
runs), or a running allocator service over gRPC. Both take and give the same plain values."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from krl.allocator.build import build_allocator
from krl.allocator.service import AllocateInput
from krl.allocator.settings import AllocatorSettings
from krl.allocator.solve.solver import Mode
from krl.allocator.store import Outcome
from krl.common.redis_server import EmbeddedRedis
from krl_client import AllocatorClient


class InProcessAllocator:
    """The allocator's use cases called directly, over an embedded Redis (no AOF: a simulation
    needs no persistence). One instance serves many namespaces."""

    def __init__(self, half_life_steps: float = 0.0, redis_url: str | None = None) -> None:
        self._runner = asyncio.Runner()
        self._tmp: Path | None = None
        self.redis_server: EmbeddedRedis | None = None
        if redis_url is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="krl-sim-"))
            self.redis_server = EmbeddedRedis(self._tmp, appendonly=False).start()
            redis_url = self.redis_server.url
        settings = AllocatorSettings(redis_url=redis_url, half_life_steps=half_life_steps)
        self.allocator = self._runner.run(build_allocator(settings, redis_url))
        self.half_life_steps = half_life_steps

    def allocate(
        self,
        namespace: str,
        step: int,
        ids: Sequence[str],
        budget: int,
        *,
        mode: str,
        min_n: int,
        max_n: int,
        fallback: bool = True,
        visit_half_life: float | None = None,
        objective: str | None = None,
    ) -> tuple[str, np.ndarray]:
        req = AllocateInput(
            namespace,
            step,
            list(ids),
            budget,
            min_n,
            max_n,
            Mode(mode),
            fallback,
            visit_half_life,
            objective,
        )
        res = self._runner.run(self.allocator.allocate(req))
        return res.allocation_id, np.asarray(res.n, dtype=np.int64)

    def report(
        self,
        namespace: str,
        allocation_id: str,
        ids: Sequence[str],
        k: np.ndarray,
        n: np.ndarray,
        tokens: np.ndarray,
    ) -> int:
        outcomes = [
            Outcome(pid, int(a), int(b), int(c))
            for pid, a, b, c in zip(ids, k, n, tokens, strict=True)
            if b > 0
        ]
        if not outcomes:
            return 0
        return self._runner.run(self.allocator.report(namespace, allocation_id, outcomes)).accepted

    def close(self) -> None:
        self._runner.run(self.allocator.store.aclose())
        self._runner.close()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class ServiceAllocator:
    """A running allocator service (`krl allocator`) over gRPC; its half-life is the service's."""

    def __init__(self, target: str, token: str | None = None) -> None:
        self.target = target
        self.token = token
        self._clients: dict[str, AllocatorClient] = {}

    def _client(self, namespace: str) -> AllocatorClient:
        c = self._clients.get(namespace)
        if c is None:
            c = self._clients[namespace] = AllocatorClient(self.target, namespace, token=self.token)
        return c

    def allocate(
        self,
        namespace: str,
        step: int,
        ids: Sequence[str],
        budget: int,
        *,
        mode: str,
        min_n: int,
        max_n: int,
        fallback: bool = True,
        visit_half_life: float | None = None,
        objective: str | None = None,
    ) -> tuple[str, np.ndarray]:
        a = self._client(namespace).allocate(
            ids,
            budget,
            step=step,
            mode=mode,
            min_n=min_n,
            max_n=max_n,
            fallback=fallback,
            visit_half_life=visit_half_life,
            objective=objective,
        )
        return a.allocation_id, np.fromiter((a.n[i] for i in ids), np.int64, len(ids))

    def report(
        self,
        namespace: str,
        allocation_id: str,
        ids: Sequence[str],
        k: np.ndarray,
        n: np.ndarray,
        tokens: np.ndarray,
    ) -> int:
        outcomes = {
            pid: (int(a), int(b), int(c))
            for pid, a, b, c in zip(ids, k, n, tokens, strict=True)
            if b > 0
        }
        if not outcomes:
            return 0
        return self._client(namespace).report(allocation_id, outcomes).accepted

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
