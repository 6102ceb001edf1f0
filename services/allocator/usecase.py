"""The use case's inputs and answers, and the rules on names and steps that the adapters check
at their edge too (one home: the HTTP models and gRPC adapter import them from here)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from krl.allocator.solve.solver import Mode
from krl.allocator.store import PromptRecord
from krl.common.errors import check

# fullmatch, not match: with match, "$" also matches before a trailing newline ("run1\n")
NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ALLOCATION_ID_RE = re.compile(r"[0-9a-f]{32}")
MAX_STEP = 2**31 - 1  # a visit's step is stored as an int32 (store/record.py)


@dataclass(frozen=True)
class AllocateInput:
    namespace: str
    step: int
    prompt_ids: Sequence[str]
    budget: int
    min_n: int
    max_n: int
    mode: Mode = Mode.EB
    fallback: bool = True
    visit_half_life: float | None = None
    """eb: evidence halves every this many visits of the prompt (0: never); None: the server's."""
    objective: str | None = None
    """eb: one of objectives.OBJECTIVES; None: the one made for loss_agg, else the server's
    (settings.objective)."""
    loss_agg: str | None = None
    """The caller's loss aggregation (krl_client.messages.LOSS_AGGS); None: unknown."""


@dataclass
class AllocateResult:
    allocation_id: str
    prompt_ids: Sequence[str]
    n: list[int]
    p: list[float]
    value: list[float]
    objective: float
    solve_ms: float
    mode: Mode
    budget_used: int
    gap_bound: float = 0.0
    meta: dict = field(default_factory=dict)
    """What the store keeps of the allocation (see stored())."""

    def stored(self) -> dict:
        """The allocation as GET .../allocations/{id} reads it back, before any report."""
        n = dict(zip(self.prompt_ids, self.n, strict=True))
        return {"allocation_id": self.allocation_id, **self.meta, "reported_prompts": 0, "n": n}


@dataclass
class PromptView:
    record: PromptRecord
    posterior_alpha: float
    """A Beta summary (namespace Beta prior + decayed evidence), shown as a diagnostic: no
    mode allocates with it."""
    posterior_beta: float
    eb_posterior_mean: float
    """Mode eb's posterior on its grid of p (the default mode's), as an Allocate at the same
    step would see the prompt: its mean and standard deviation."""
    eb_posterior_sd: float

    @property
    def posterior_mean(self) -> float:
        return self.posterior_alpha / (self.posterior_alpha + self.posterior_beta)


@dataclass
class NamespaceSummary:
    namespace: str
    prompts_tracked: int
    solved: int
    unsolved: int
    allocations: int
    reports: int
    prior_alpha: float
    """The namespace's Beta prior (method of moments), a diagnostic beside eb's grid prior."""
    prior_beta: float
    eb_prior_mean: float
    """Mode eb's prior on its grid of p (the default mode's, fitted to the prompts' last
    visits): its mean and standard deviation."""
    eb_prior_sd: float
    mean_tokens: float | None
    difficulty_histogram: list[dict[str, float]] = field(default_factory=list)


def check_namespace(ns: str) -> None:
    check(
        bool(NAMESPACE_RE.fullmatch(ns)), "namespace", f"{ns!r} must match {NAMESPACE_RE.pattern}"
    )
