"""AsyncAllocatorClient: the allocator from an asyncio trainer (grpc.aio), the same calls as
AllocatorClient awaited.

    async with AsyncAllocatorClient("127.0.0.1:50051", namespace="my-run") as client:
        alloc = await client.allocate(prompt_ids, budget=8 * len(prompt_ids), step=step)
        await client.report(alloc.allocation_id, {pid: (successes, trials) for ...})

Create it inside the event loop that uses it (grpc.aio channels belong to one loop)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from krl_client import messages as m
from krl_client.api import allocator_pb2 as pb
from krl_client.api import allocator_pb2_grpc as pb_grpc
from krl_client.channel import AsyncGrpcClient


class AsyncAllocatorClient(AsyncGrpcClient):
    def __init__(self, target: str, namespace: str = "default", **kw: Any) -> None:
        """kw: token, timeout_s (10), retries (5), backoff_s (0.1), max_backoff_s (30),
        max_message_bytes."""
        super().__init__(target, **kw)
        self.namespace = namespace
        self._stub = pb_grpc.AllocatorServiceStub(self._channel)

    async def allocate(
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
        namespace: str | None = None,
    ) -> m.Allocation:
        req = m.allocate_request(
            namespace or self.namespace,
            prompt_ids,
            budget,
            step=step,
            min_n=min_n,
            max_n=max_n,
            mode=mode,
            fallback=fallback,
            visit_half_life=visit_half_life,
            objective=objective,
            loss_agg=loss_agg,
        )
        return m.allocation(await self._call(self._stub.Allocate, req), req.prompt_ids)

    async def report(
        self, allocation_id: str, outcomes: m.OutcomesLike, *, namespace: str | None = None
    ) -> m.ReportResult:
        req = m.report_request(namespace or self.namespace, allocation_id, outcomes)
        return m.report_result(await self._call(self._stub.ReportOutcomes, req))

    async def prompt_stats(
        self, prompt_ids: Iterable[str], step: int = 0, *, namespace: str | None = None
    ) -> list[pb.PromptStats]:
        req = pb.GetPromptStatsRequest(
            namespace=namespace or self.namespace, prompt_ids=list(prompt_ids), step=step
        )
        return list((await self._call(self._stub.GetPromptStats, req)).stats)
