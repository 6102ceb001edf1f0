"""gRPC adapter: converts AllocatorService messages to the use cases' dataclasses and back."""

from __future__ import annotations

import grpc
import numpy as np

from krl.allocator.service import Allocator
from krl.allocator.solve.solver import Mode
from krl.allocator.store import Outcome, OutcomeColumns
from krl.allocator.usecase import AllocateInput
from krl.common.errors import InvalidArgument, check
from krl.common.grpc_server import unary_errors
from krl_client.api import allocator_pb2 as pb
from krl_client.api import allocator_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AllocatorService"].full_name
MODE_FROM_PB = {
    pb.ALLOCATION_MODE_UNSPECIFIED: Mode.EB,
    pb.ALLOCATION_MODE_PAPER: Mode.PAPER,
    pb.ALLOCATION_MODE_EB: Mode.EB,
    pb.ALLOCATION_MODE_UNIFORM: Mode.UNIFORM,
}
MODE_TO_PB = {v: k for k, v in MODE_FROM_PB.items() if k != pb.ALLOCATION_MODE_UNSPECIFIED}


class AllocatorServicer(pb_grpc.AllocatorServiceServicer):
    def __init__(self, allocator: Allocator) -> None:
        self.allocator = allocator
        self.error_counter = allocator.metrics.errors

    @unary_errors
    async def Allocate(self, request: pb.AllocateRequest, context: grpc.aio.ServicerContext):
        if request.mode not in MODE_FROM_PB:
            raise InvalidArgument(f"unknown mode {request.mode}", field="mode")
        res = await self.allocator.allocate(
            AllocateInput(
                namespace=request.namespace,
                step=request.step,
                prompt_ids=list(request.prompt_ids),
                budget=request.budget,
                min_n=request.min_n,
                max_n=request.max_n,
                mode=MODE_FROM_PB[request.mode],
                fallback=request.fallback if request.HasField("fallback") else True,
                visit_half_life=(
                    request.visit_half_life if request.HasField("visit_half_life") else None
                ),
                objective=request.objective or None,
                loss_agg=request.loss_agg or None,
            )
        )
        out = pb.AllocateResponse(
            allocation_id=res.allocation_id,
            objective=res.objective,
            solve_ms=res.solve_ms,
            mode=MODE_TO_PB[res.mode],
            budget_used=res.budget_used,
            gap_bound=res.gap_bound,
        )
        if request.packed:  # three packed arrays instead of one message per prompt
            out.n.extend(res.n)
            out.p.extend(res.p)
            out.value.extend(res.value)
        else:
            out.allocations.extend(
                pb.PromptAllocation(prompt_id=pid, n=n, p=p, value=v)
                for pid, n, p, v in zip(res.prompt_ids, res.n, res.p, res.value, strict=True)
            )
        return out

    @unary_errors
    async def ReportOutcomes(
        self, request: pb.ReportOutcomesRequest, context: grpc.aio.ServicerContext
    ):
        res = await self.allocator.report(
            request.namespace, request.allocation_id, _outcomes(request)
        )
        return pb.ReportOutcomesResponse(
            accepted=res.accepted,
            duplicates=len(res.duplicates),
            duplicate_prompt_ids=res.duplicates,
        )

    @unary_errors
    async def GetPromptStats(
        self, request: pb.GetPromptStatsRequest, context: grpc.aio.ServicerContext
    ):
        views = await self.allocator.prompt_views(
            request.namespace, list(request.prompt_ids), request.step
        )
        out = []
        for v in views:
            r = v.record
            out.append(
                pb.PromptStats(
                    prompt_id=r.prompt_id,
                    found=r.found,
                    visits=r.visits,
                    trials=r.trials,
                    successes=r.successes,
                    last_step=r.last_step,
                    last_trials=r.last_trials,
                    last_successes=r.last_successes,
                    evidence_successes=r.evidence_successes,
                    evidence_failures=r.evidence_failures,
                    mean_tokens=r.mean_tokens,
                    posterior_alpha=v.posterior_alpha,
                    posterior_beta=v.posterior_beta,
                    posterior_mean=v.posterior_mean,
                    eb_posterior_mean=v.eb_posterior_mean,
                    eb_posterior_sd=v.eb_posterior_sd,
                    recent=[pb.RecentAllocation(step=s, n=n, successes=k) for s, n, k in r.recent],
                )
            )
        return pb.GetPromptStatsResponse(stats=out)


def register(allocator: Allocator):
    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_AllocatorServiceServicer_to_server(AllocatorServicer(allocator), server)

    return add


def _outcomes(request: pb.ReportOutcomesRequest) -> list[Outcome] | OutcomeColumns:
    """The report's outcomes, from the messages or from the packed arrays (one form only)."""
    if not request.prompt_ids:
        if request.successes or request.trials or request.total_tokens:
            raise InvalidArgument("packed outcomes without prompt_ids", field="prompt_ids")
        return [
            Outcome(o.prompt_id, o.successes, o.trials, o.total_tokens) for o in request.outcomes
        ]
    if request.outcomes:
        raise InvalidArgument("give outcomes or the packed arrays, not both", field="outcomes")
    m = len(request.prompt_ids)
    tokens = request.total_tokens or [0] * m
    for name, arr in (
        ("successes", request.successes),
        ("trials", request.trials),
        ("total_tokens", tokens),
    ):
        check(len(arr) == m, name, f"has {len(arr)} entries for {m} prompt_ids")
    return OutcomeColumns(
        list(request.prompt_ids),
        np.array(request.successes, dtype=np.int64),
        np.array(request.trials, dtype=np.int64),
        np.array(tokens, dtype=np.int64),
    )
