"""AllocatorClient: call the allocator from your own trainer (verl, TRL, OpenRLHF, ...).

    client = AllocatorClient("127.0.0.1:50051", namespace="my-run")
    alloc = client.allocate(prompt_ids, budget=8 * len(prompt_ids), step=step)
    client.report(alloc.allocation_id, {pid: (successes, trials) for ...})

Every call has a deadline; UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are retried
with exponential backoff (a report is idempotent, so a retry never counts twice). Errors come
back as the project's exceptions (krl.common.errors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from krl.api.allocator.v1 import allocator_pb2 as pb
from krl.api.allocator.v1 import allocator_pb2_grpc as pb_grpc
from krl.common.grpc_client import GrpcClient

MODES = {
    "paper": pb.ALLOCATION_MODE_PAPER,
    "bayes": pb.ALLOCATION_MODE_BAYES,
    "tokens": pb.ALLOCATION_MODE_TOKENS,
    "eb": pb.ALLOCATION_MODE_EB,
}


@dataclass(frozen=True)
class Allocation:
    allocation_id: str
    n: dict[str, int]
    """Rollouts per prompt id, in the order asked."""
    p: dict[str, float]
    objective: float
    solve_ms: float
    budget_used: int
    gap_bound: float


@dataclass(frozen=True)
class ReportResult:
    accepted: int
    duplicates: int


class AllocatorClient(GrpcClient):
    def __init__(self, target: str, namespace: str, **kw: Any) -> None:
        """kw: token, timeout_s (10), retries (5), backoff_s (0.1), max_message_bytes."""
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
        objective: str = "paper",
    ) -> Allocation:
        """visit_half_life and objective apply to mode eb (None: the server's half-life)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        req = pb.AllocateRequest(
            namespace=self.namespace,
            step=step,
            prompt_ids=list(prompt_ids),
            budget=budget,
            min_n=min_n,
            max_n=max_n,
            mode=MODES[mode],
            fallback=fallback,
            visit_half_life=visit_half_life,
            objective=objective,
        )
        res = self._call(self._stub.Allocate, req)
        return Allocation(
            allocation_id=res.allocation_id,
            n={a.prompt_id: a.n for a in res.allocations},
            p={a.prompt_id: a.p for a in res.allocations},
            objective=res.objective,
            solve_ms=res.solve_ms,
            budget_used=res.budget_used,
            gap_bound=res.gap_bound,
        )

    def report(
        self,
        allocation_id: str,
        outcomes: Mapping[str, tuple[int, int] | tuple[int, int, int]],
    ) -> ReportResult:
        """outcomes: prompt id -> (successes, trials) or (successes, trials, total_tokens)."""
        msgs = [
            pb.PromptOutcome(
                prompt_id=pid, successes=o[0], trials=o[1], total_tokens=o[2] if len(o) > 2 else 0
            )
            for pid, o in outcomes.items()
        ]
        req = pb.ReportOutcomesRequest(
            namespace=self.namespace, allocation_id=allocation_id, outcomes=msgs
        )
        res = self._call(self._stub.ReportOutcomes, req)
        return ReportResult(res.accepted, res.duplicates)

    def prompt_stats(self, prompt_ids: Iterable[str], step: int = 0) -> list[pb.PromptStats]:
        req = pb.GetPromptStatsRequest(
            namespace=self.namespace, prompt_ids=list(prompt_ids), step=step
        )
        return list(self._call(self._stub.GetPromptStats, req).stats)
