"""Where the simulator's allocations come from: the real allocator code in process (its
Allocator class over a real embedded redis-server, the same store and solver the service
runs), or a running allocator service over gRPC. Either gives a client per namespace with
AllocatorClient's allocate and report, which the step (krl.rl.step) calls."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from krl.allocator.build import build_allocator
from krl.allocator.settings import AllocatorSettings
from krl.allocator.solve.solver import Mode
from krl.allocator.usecase import AllocateInput
from krl.common.redis_server import EmbeddedRedis
from krl_client import AllocatorClient
from krl_client.messages import Allocation, Outcome, ReportResult


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

    def client(self, namespace: str) -> InProcessClient:
        return InProcessClient(self, namespace)

    def close(self) -> None:
        self._runner.run(self.allocator.store.aclose())
        self._runner.close()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class InProcessClient:
    """AllocatorClient's allocate and report for one namespace, served by the allocator's use
    cases in this process."""

    def __init__(self, owner: InProcessAllocator, namespace: str) -> None:
        self.owner = owner
        self.namespace = namespace

    def allocate(
        self,
        prompt_ids: Sequence[str],
        budget: int,
        *,
        step: int = 0,
        min_n: int = 2,
        max_n: int = 64,
        mode: str = "eb",
        fallback: bool = True,
        visit_half_life: float | None = None,
        objective: str | None = None,
        loss_agg: str | None = None,
    ) -> Allocation:
        ids = list(prompt_ids)
        req = AllocateInput(
            self.namespace,
            step,
            ids,
            budget,
            min_n,
            max_n,
            Mode(mode),
            fallback,
            visit_half_life,
            objective,
            loss_agg,
        )
        res = self.owner._runner.run(self.owner.allocator.allocate(req))
        return Allocation(
            res.allocation_id,
            dict(zip(ids, res.n, strict=True)),
            dict(zip(ids, res.p, strict=True)),
            res.objective,
            res.solve_ms,
            res.budget_used,
            res.gap_bound,
        )

    def report(self, allocation_id: str, outcomes: Sequence[Outcome]) -> ReportResult:
        res = self.owner._runner.run(
            self.owner.allocator.report(self.namespace, allocation_id, list(outcomes))
        )
        return ReportResult(res.accepted, len(res.duplicates), tuple(res.duplicates))


class ServiceAllocator:
    """A running allocator service (`krl allocator`) over gRPC; its half-life is the service's."""

    def __init__(self, target: str, token: str | None = None) -> None:
        self.target = target
        self.token = token
        self._clients: dict[str, AllocatorClient] = {}

    def client(self, namespace: str) -> AllocatorClient:
        c = self._clients.get(namespace)
        if c is None:
            c = self._clients[namespace] = AllocatorClient(self.target, namespace, token=self.token)
        return c

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
