"""The client's data shapes and their conversion to and from the allocator's protobuf messages,
shared by the sync and the async client."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from krl_client.api import allocator_pb2 as pb

MODES = {
    "eb": pb.ALLOCATION_MODE_EB,
    "paper": pb.ALLOCATION_MODE_PAPER,
    "uniform": pb.ALLOCATION_MODE_UNIFORM,
}
Objective = Literal["group-gradient", "sqrt-gradient", "paper"]
"""Mode eb's objectives, each kept by a measurement of held-out accuracy (docs/RESULTS.md): their
one declaration (the allocator's krl.allocator.objectives
implements each; the proto comment, the settings help, the Helm schema and values name them,
and test_objectives fails on any of those that drifts)."""
OBJECTIVES: tuple[str, ...] = get_args(Objective)

LossAgg = Literal["prompt-mean", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
"""How a trainer's loss weighs its rollouts (verl's names, plus prompt-mean: every prompt's group
weighs the same whatever its n); the trainer's krl.trainer.grpo implements each."""
LOSS_AGGS: tuple[str, ...] = get_args(LossAgg)

OBJECTIVE_FOR_LOSS: dict[str, str] = {
    "prompt-mean": "group-gradient",
    "token-mean": "sqrt-gradient",
    "seq-mean-token-mean": "sqrt-gradient",
    "seq-mean-token-sum": "sqrt-gradient",
}
"""The objective mode eb maximises for a trainer's loss aggregation (the request's loss_agg),
chosen by held-out accuracy on the real loop (docs/RESULTS.md). Under prompt-mean a group weighs
1/G whatever its n, so extra rollouts only sharpen its gradient's sign and size (E[sigma^] of the
group); under the others a prompt's weight grows with its n, and sqrt-gradient's diminishing
returns keep one prompt from taking over the update."""


def check_loss_agg(loss_agg: str | None) -> None:
    """ValueError unless loss_agg is None or one of LOSS_AGGS."""
    if loss_agg is not None and loss_agg not in OBJECTIVE_FOR_LOSS:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {loss_agg!r}")


@dataclass(frozen=True)
class Outcome:
    """One prompt's result in a step: how many of its rollouts succeeded, out of how many
    scored, and how many response tokens they took (0: unknown)."""

    prompt_id: str
    successes: int
    trials: int
    total_tokens: int = 0


@dataclass(frozen=True)
class Allocation:
    allocation_id: str
    n: dict[str, int]
    """Rollouts per prompt id, in the order asked."""
    p: dict[str, float]
    """The success rate the allocation assumed per prompt (eb: the posterior mean)."""
    objective: float
    solve_ms: float
    budget_used: int
    gap_bound: float


@dataclass(frozen=True)
class ReportResult:
    accepted: int
    duplicates: int
    duplicate_prompt_ids: tuple[str, ...] = ()


OutcomesLike = Mapping[str, tuple[int, ...] | Outcome] | Iterable[Outcome]
"""prompt id -> (successes, trials[, total_tokens]) or Outcome, or Outcome objects."""


def allocate_request(
    namespace: str,
    prompt_ids: Sequence[str],
    budget: int,
    *,
    step: int,
    min_n: int,
    max_n: int,
    mode: str,
    fallback: bool,
    visit_half_life: float | None,
    objective: str | None,
    loss_agg: str | None = None,
) -> pb.AllocateRequest:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    check_loss_agg(loss_agg or None)
    if isinstance(prompt_ids, str):
        raise TypeError("prompt_ids must be a sequence of ids, not one string")
    return pb.AllocateRequest(
        namespace=namespace,
        step=step,
        prompt_ids=list(prompt_ids),
        budget=budget,
        min_n=min_n,
        max_n=max_n,
        mode=MODES[mode],
        fallback=fallback,
        visit_half_life=visit_half_life,
        objective=objective or "",
        loss_agg=loss_agg or "",
        packed=True,
    )


def allocation(res: pb.AllocateResponse, prompt_ids: Sequence[str]) -> Allocation:
    """The response to a request for `prompt_ids`: packed arrays in their order, or (from a
    server older than packing) one message per prompt."""
    if res.allocations:
        n = {a.prompt_id: a.n for a in res.allocations}
        p = {a.prompt_id: a.p for a in res.allocations}
    else:
        if len(res.n) != len(prompt_ids):
            raise ValueError(f"the server answered {len(res.n)} n for {len(prompt_ids)} prompts")
        n, p = dict(zip(prompt_ids, res.n, strict=True)), dict(zip(prompt_ids, res.p, strict=True))
    return Allocation(
        allocation_id=res.allocation_id,
        n=n,
        p=p,
        objective=res.objective,
        solve_ms=res.solve_ms,
        budget_used=res.budget_used,
        gap_bound=res.gap_bound,
    )


def outcome_columns(outcomes: OutcomesLike) -> tuple[list[str], list[int], list[int], list[int]]:
    """(prompt ids, successes, trials, total tokens) from a mapping prompt id -> (successes,
    trials[, total_tokens]) or Outcome, or from an iterable of Outcome. Columns, not one Outcome
    per prompt: building 1,024 Outcome objects took longer (~2 ms) than the call itself."""
    if isinstance(outcomes, Mapping):
        ids, rows = list(outcomes.keys()), list(outcomes.values())
    else:
        rows = list(outcomes)
        ids = [o.prompt_id for o in rows]
    rows = [(o.successes, o.trials, o.total_tokens) if isinstance(o, Outcome) else o for o in rows]
    return (
        ids,
        [int(o[0]) for o in rows],
        [int(o[1]) for o in rows],
        [int(o[2]) if len(o) > 2 else 0 for o in rows],
    )


def report_request(
    namespace: str, allocation_id: str, outcomes: OutcomesLike
) -> pb.ReportOutcomesRequest:
    """Packed parallel arrays (one entry per prompt), cheaper to build and parse than one
    message per prompt."""
    ids, successes, trials, tokens = outcome_columns(outcomes)
    return pb.ReportOutcomesRequest(
        namespace=namespace,
        allocation_id=allocation_id,
        prompt_ids=ids,
        successes=successes,
        trials=trials,
        total_tokens=tokens,
    )


def report_result(res: pb.ReportOutcomesResponse) -> ReportResult:
    return ReportResult(res.accepted, res.duplicates, tuple(res.duplicate_prompt_ids))
