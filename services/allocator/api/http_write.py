"""The allocator's HTTP write path and statistics transfer: allocate, report, list prompts,
export and import. Same use cases as gRPC (service.py, transfer.py), so the same validation,
auth and idempotence: a retried report counts once per (allocation id, prompt)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from krl.allocator import transfer
from krl.allocator.service import (
    ALLOCATION_ID_RE,
    MAX_STEP,
    NAMESPACE_RE,
    AllocateInput,
    Allocator,
)
from krl.allocator.solve.objectives import Objective
from krl.allocator.solve.solver import Mode
from krl.allocator.store import Outcome
from krl.common.errors import InvalidArgument
from krl_client.messages import LossAgg

INT32, INT64 = 2**31 - 1, 2**63 - 1
NDJSON = "application/x-ndjson"
# Path parameters as the OpenAPI document states them (the use cases check them again).
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


def add_write_routes(api: APIRouter) -> None:
    def _alloc(request: Request) -> Allocator:
        return request.app.state.allocator

    @api.post(
        "/namespaces/{namespace}/allocations",
        summary="Allocate rollouts to a batch (the same solve as gRPC Allocate)",
        status_code=201,
    )
    async def allocate(namespace: Namespace, body: AllocateIn, request: Request) -> AllocationOut:
        alloc = _alloc(request)
        res = await alloc.allocate(
            AllocateInput(
                namespace=namespace,
                step=body.step,
                prompt_ids=body.prompt_ids,
                budget=body.budget,
                min_n=body.min_n,
                max_n=body.max_n,
                mode=body.mode,
                fallback=body.fallback,
                visit_half_life=body.visit_half_life,
                objective=body.objective,
                loss_agg=body.loss_agg,
            )
        )
        return AllocationOut(**await alloc.allocation(namespace, res.allocation_id))

    @api.post(
        "/namespaces/{namespace}/allocations/{allocation_id}/outcomes",
        summary="Report a batch's outcomes (idempotent per allocation and prompt)",
    )
    async def report(
        namespace: Namespace, allocation_id: AllocationId, body: ReportIn, request: Request
    ) -> ReportOut:
        res = await _alloc(request).report(
            namespace,
            allocation_id,
            [Outcome(o.prompt_id, o.successes, o.trials, o.total_tokens) for o in body.outcomes],
        )
        return ReportOut(
            accepted=res.accepted,
            duplicates=len(res.duplicates),
            duplicate_prompt_ids=res.duplicates,
        )

    @api.get("/namespaces/{namespace}/prompts", summary="The namespace's prompt ids, paged")
    async def prompts(
        namespace: Namespace,
        request: Request,
        cursor: Annotated[int, Query(ge=0, le=INT64, description="0: the first page.")] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000, description="About this many.")] = 1000,
    ) -> PromptPage:
        alloc = _alloc(request)
        ids, nxt = await alloc.prompt_ids(namespace, cursor, limit)
        return PromptPage(prompt_ids=ids, next_cursor=nxt or None)

    @api.get(
        "/namespaces/{namespace}/export",
        summary="Per-prompt statistics as JSON lines (transfer.py documents a line)",
        response_class=StreamingResponse,
        responses={200: {"content": {NDJSON: {}}}},
    )
    async def export(namespace: Namespace, request: Request) -> StreamingResponse:
        rows = transfer.export_rows(_alloc(request), namespace)
        first = await anext(rows, None)  # errors (unknown namespace) before the 200 is sent

        async def lines():
            if first is not None:
                yield json.dumps(first) + "\n"
            async for row in rows:
                yield json.dumps(row) + "\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    @api.post(
        "/namespaces/{namespace}/import",
        summary="Add prompts' statistics from JSON lines (an export, or offline pass rates)",
        openapi_extra={"requestBody": {"content": {NDJSON: {"schema": {"type": "string"}}}}},
    )
    async def import_(namespace: Namespace, request: Request) -> ImportOut:
        alloc = _alloc(request)
        body = await request.body()  # capped at max_message_bytes (BodyCap: 413)
        try:
            head, rows = parse_import(body)
        except UnicodeDecodeError as e:
            raise InvalidArgument("is not UTF-8 text", field="body") from e
        return ImportOut(**await transfer.import_rows(alloc, namespace, rows, head))
