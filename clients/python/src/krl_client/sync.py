"""AllocatorClient: the allocator from a synchronous trainer.

    with AllocatorClient("127.0.0.1:50051", namespace="my-run") as client:
        alloc = client.allocate(prompt_ids, budget=8 * len(prompt_ids), step=step)
        client.report(alloc.allocation_id, {pid: (successes, trials) for ...})

Every call has a deadline; UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried
with backoff (a report counts once per allocation and prompt, so a retry never counts twice).
Errors come back as krl_client.errors exceptions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from krl_client import messages as m
from krl_client.api import allocator_pb2 as pb
from krl_client.api import allocator_pb2_grpc as pb_grpc
from krl_client.channel import GrpcClient


class AllocatorClient(GrpcClient):
    def __init__(self, target: str, namespace: str = "default", **kw: Any) -> None:
        """kw: token, timeout_s (10), retries (5), backoff_s (0.1), max_backoff_s (30),
        max_message_bytes."""
        super().__init__(target, **kw)
        self.namespace = namespace
        self._stub = pb_grpc.AllocatorServiceStub(self._channel)

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
        namespace: str | None = None,
    ) -> m.Allocation:
        """n per prompt with sum(n) <= budget and min_n <= n <= max_n. visit_half_life and
        objective apply to mode eb (None: the server's). loss_agg declares how the caller's loss
        weighs rollouts (messages.LOSS_AGGS); with no objective, mode eb maximises the one made
        for it (messages.OBJECTIVE_FOR_LOSS)."""
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
        return m.allocation(self._call(self._stub.Allocate, req), req.prompt_ids)

    def report(
        self, allocation_id: str, outcomes: m.OutcomesLike, *, namespace: str | None = None
    ) -> m.ReportResult:
        """outcomes: prompt id -> (successes, trials[, total_tokens]), or Outcome objects."""
        req = m.report_request(namespace or self.namespace, allocation_id, outcomes)
        return m.report_result(self._call(self._stub.ReportOutcomes, req))

    def prompt_stats(
        self, prompt_ids: Iterable[str], step: int = 0, *, namespace: str | None = None
    ) -> list[pb.PromptStats]:
        req = pb.GetPromptStatsRequest(
            namespace=namespace or self.namespace, prompt_ids=list(prompt_ids), step=step
        )
        return list(self._call(self._stub.GetPromptStats, req).stats)
