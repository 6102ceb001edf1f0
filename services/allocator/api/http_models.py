"""The allocator's HTTP protocol: request and response models, the path parameters as the
OpenAPI document states them (the use cases check them again), and the import body's parser.
One module for the whole HTTP surface; the routes are in http_routes.py."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from krl.allocator import transfer
from krl.allocator.solve.objectives import Objective
from krl.allocator.solve.solver import Mode
from krl.allocator.usecase import ALLOCATION_ID_RE, MAX_STEP, NAMESPACE_RE
from krl.common.errors import InvalidArgument
from krl_client.messages import LossAgg

INT32, INT64 = 2**31 - 1, 2**63 - 1
NDJSON = "application/x-ndjson"
Namespace = Annotated[str, Path(pattern=f"^{NAMESPACE_RE.pattern}$", description="A namespace.")]
AllocationId = Annotated[
    str, Path(pattern=f"^{ALLOCATION_ID_RE.pattern}$", description="32 lowercase hex digits.")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllocationOut(BaseModel):
    allocation_id: str
    step: int
    mode: str
    budget: int
    min_n: int
    max_n: int
    fallback: bool
    objective: float
    objective_name: str = Field(
        "", description="What it maximised: mode eb's objective, else the mode ('' if older)."
    )
    solve_ms: float
    budget_used: int
    gap_bound: float
    prompts: int
    created_unix: float
    reported_prompts: int
    n: dict[str, int]


class AllocateIn(_Strict):
    prompt_ids: list[str] = Field(min_length=1, description="The batch's prompt ids, unique.")
    budget: int = Field(ge=0, le=INT64, description="Total rollouts for the batch.")
    min_n: int = Field(2, ge=0, le=INT32, description="Fewest rollouts per prompt.")
    max_n: int = Field(64, ge=0, le=INT32, description="Most rollouts per prompt.")
    mode: Mode = Mode.EB
    step: int = Field(0, ge=0, le=MAX_STEP, description="The trainer's step (0: unknown).")
    fallback: bool = Field(True, description="Mode paper: the paper's fallback for extremes.")
    visit_half_life: float | None = Field(
        None, ge=0, description="Mode eb: evidence halves every this many visits (0: never)."
    )
    objective: Objective | None = Field(
        None,
        description="Mode eb: what the allocation maximises (unset: the one made for loss_agg, "
        "else the server's).",
    )
    loss_agg: LossAgg | None = Field(
        None,
        description="The caller's loss aggregation: prompt-mean (each prompt's group weighs the "
        "same whatever its n), token-mean, seq-mean-token-mean or seq-mean-token-sum (a prompt "
        "weighs n-fold); mode eb with no objective maximises the objective made for it.",
    )


class OutcomeIn(_Strict):
    prompt_id: str = Field(min_length=1)
    successes: int = Field(ge=0, le=INT32)
    trials: int = Field(ge=0, le=INT32, description="Scored rollouts (0: no evidence, ignored).")
    total_tokens: int = Field(0, ge=0, le=INT64)


class ReportIn(_Strict):
    outcomes: list[OutcomeIn] = Field(min_length=1)


class ReportOut(BaseModel):
    accepted: int
    duplicates: int
    duplicate_prompt_ids: list[str]


class PromptPage(BaseModel):
    prompt_ids: list[str]
    next_cursor: int | None = Field(description="Pass as ?cursor= for the next page; null: done.")


class VisitIn(_Strict):
    step: int = Field(0, ge=0, le=MAX_STEP)
    n: int = Field(ge=1, le=INT32)
    successes: int = Field(ge=0, le=INT32)


class ImportLine(BaseModel):
    """A line of an export (extra fields such as trials or visit_count are ignored), or the
    short form {prompt_id, successes, trials[, step]} of an offline pass rate."""

    prompt_id: str
    visits: list[VisitIn] | None = None
    successes: int | None = Field(None, ge=0, le=INT32)
    trials: int | None = Field(None, ge=1, le=INT32)
    step: int = Field(0, ge=0, le=MAX_STEP)
    mean_tokens: float = 0.0
    record: str | None = Field(None, max_length=4096, description="An export's record (base64).")

    def row(self) -> transfer.PromptStatsRow:
        if self.record is not None:
            try:
                raw = base64.b64decode(self.record, validate=True)
            except binascii.Error as e:
                raise InvalidArgument("is not base64", field="record") from e
            return transfer.PromptStatsRow(self.prompt_id, (), 0.0, raw)
        if self.visits is not None:
            visits = [transfer.Visit(v.step, v.n, v.successes) for v in self.visits]
        elif self.successes is not None and self.trials is not None:
            visits = [transfer.Visit(self.step, self.trials, self.successes)]
        else:
            raise InvalidArgument("needs visits, or successes and trials", field="visits")
        return transfer.PromptStatsRow(self.prompt_id, visits, self.mean_tokens)


class NamespaceLine(_Strict):
    """An export's first line: the namespace aggregates its prompt lines do not carry."""

    namespace: dict[str, float]


class ImportOut(BaseModel):
    prompts: int = Field(description="Prompts stored by this request.")
    visits: int = Field(description="Their visits.")
    skipped: int = Field(description="Prompts an earlier attempt of the same lines stored.")


def _is_namespace_line(line: str) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "namespace" in obj


def parse_import(body: bytes) -> tuple[dict[str, float] | None, list[transfer.PromptStatsRow]]:
    """The namespace line (or None) and the prompt lines. Lines end at \n only: a raw U+2028
    inside a JSON string is part of the string."""
    rows, head = [], None
    for i, line in enumerate(body.decode("utf-8", errors="strict").split("\n")):
        if not line.strip():
            continue
        try:
            if not rows and head is None and _is_namespace_line(line):
                head = NamespaceLine.model_validate_json(line).namespace
                continue
            item = ImportLine.model_validate_json(line)
            rows.append(item.row())
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise InvalidArgument(
                err["msg"], field=f"lines[{i}]" + (f".{where}" if where else "")
            ) from e
        except InvalidArgument as e:
            raise InvalidArgument(e.message, field=f"lines[{i}].{e.field}") from e
    return head, rows


class HistogramBin(BaseModel):
    p_low: float
    p_high: float
    prompts: int


class NamespaceSummaryOut(BaseModel):
    namespace: str
    prompts_tracked: int
    solved: int
    unsolved: int
    allocations: int
    reports: int
    prior_alpha: float = Field(
        description="The namespace's Beta prior (method of moments of the prompts' rates), a "
        "diagnostic: no mode allocates with it."
    )
    prior_beta: float
    eb_prior_mean: float = Field(
        description="Mode eb's grid prior (the default mode's, fitted to the prompts' last "
        "visits): its mean."
    )
    eb_prior_sd: float = Field(description="Mode eb's grid prior: its standard deviation.")
    mean_tokens: float | None
    difficulty_histogram: list[HistogramBin]


class RecentOut(BaseModel):
    step: int
    n: int
    successes: int


class PromptOut(BaseModel):
    prompt_id: str
    found: bool
    visits: int
    trials: int
    successes: int
    last_step: int
    last_trials: int
    last_successes: int
    evidence_successes: float
    evidence_failures: float
    mean_tokens: float
    posterior_alpha: float
    posterior_beta: float
    posterior_mean: float
    eb_posterior_mean: float
    eb_posterior_sd: float
    recent: list[RecentOut]


LatestOrId = Annotated[
    str, Path(pattern=f"^(latest|{ALLOCATION_ID_RE.pattern})$", description="An id, or 'latest'.")
]
