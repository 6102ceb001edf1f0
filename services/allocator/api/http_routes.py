"""The allocator's HTTP routes under /v1, each a plain function over one use case (service.py,
transfer.py), so validation, auth and idempotence are gRPC's: a retried report counts once per
(allocation id, prompt). The models are http_models.py's."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from krl.allocator import transfer
from krl.allocator.api.http_models import (
    INT64,
    NDJSON,
    AllocateIn,
    AllocationId,
    AllocationOut,
    ImportOut,
    LatestOrId,
    Namespace,
    NamespaceSummaryOut,
    PromptOut,
    PromptPage,
    RecentOut,
    ReportIn,
    ReportOut,
    parse_import,
)
from krl.allocator.service import Allocator
from krl.allocator.store import Outcome
from krl.allocator.usecase import AllocateInput
from krl.common.errors import InvalidArgument


def allocator(request: Request) -> Allocator:
    return request.app.state.allocator


AllocatorDep = Annotated[Allocator, Depends(allocator)]

router = APIRouter()


@router.get("/namespaces", summary="Namespaces with histories")
async def namespaces(alloc: AllocatorDep) -> list[str]:
    return await alloc.namespaces()


@router.get("/namespaces/{namespace}", summary="A namespace's summary")
async def summary(namespace: Namespace, alloc: AllocatorDep) -> NamespaceSummaryOut:
    s = await alloc.summary(namespace)
    return NamespaceSummaryOut(**s.__dict__)


@router.get(
    "/namespaces/{namespace}/prompts/{prompt_id}", summary="One prompt's history and posterior"
)
async def prompt(
    namespace: Namespace,
    prompt_id: Annotated[str, Path(min_length=1)],
    alloc: AllocatorDep,
    step: Annotated[int, Query(ge=0, description="Decay evidence to this step (0: last).")] = 0,
) -> PromptOut:
    (v,) = await alloc.prompt_views(namespace, [prompt_id], step)
    r = v.record
    return PromptOut(
        **{k: getattr(r, k) for k in PromptOut.model_fields if hasattr(r, k) and k != "recent"},
        posterior_alpha=v.posterior_alpha,
        posterior_beta=v.posterior_beta,
        posterior_mean=v.posterior_mean,
        eb_posterior_mean=v.eb_posterior_mean,
        eb_posterior_sd=v.eb_posterior_sd,
        recent=[RecentOut(step=s, n=n, successes=k) for s, n, k in r.recent],
    )


@router.get(
    "/namespaces/{namespace}/allocations/{allocation_id}", summary="An allocation, or 'latest'"
)
async def allocation(
    namespace: Namespace, allocation_id: LatestOrId, alloc: AllocatorDep
) -> AllocationOut:
    return AllocationOut(**await alloc.allocation(namespace, allocation_id))


@router.post(
    "/namespaces/{namespace}/allocations",
    summary="Allocate rollouts to a batch (the same solve as gRPC Allocate)",
    status_code=201,
)
async def allocate(namespace: Namespace, body: AllocateIn, alloc: AllocatorDep) -> AllocationOut:
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
    return AllocationOut(**res.stored())  # as stored: no read back from Redis


@router.post(
    "/namespaces/{namespace}/allocations/{allocation_id}/outcomes",
    summary="Report a batch's outcomes (idempotent per allocation and prompt)",
)
async def report(
    namespace: Namespace, allocation_id: AllocationId, body: ReportIn, alloc: AllocatorDep
) -> ReportOut:
    res = await alloc.report(
        namespace,
        allocation_id,
        [Outcome(o.prompt_id, o.successes, o.trials, o.total_tokens) for o in body.outcomes],
    )
    return ReportOut(
        accepted=res.accepted,
        duplicates=len(res.duplicates),
        duplicate_prompt_ids=res.duplicates,
    )


@router.get("/namespaces/{namespace}/prompts", summary="The namespace's prompt ids, paged")
async def prompts(
    namespace: Namespace,
    alloc: AllocatorDep,
    cursor: Annotated[int, Query(ge=0, le=INT64, description="0: the first page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000, description="About this many.")] = 1000,
) -> PromptPage:
    ids, nxt = await alloc.prompt_ids(namespace, cursor, limit)
    return PromptPage(prompt_ids=ids, next_cursor=nxt or None)


@router.get(
    "/namespaces/{namespace}/export",
    summary="Per-prompt statistics as JSON lines (transfer.py documents a line)",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}}},
)
async def export(namespace: Namespace, alloc: AllocatorDep) -> StreamingResponse:
    rows = transfer.export_rows(alloc, namespace)
    first = await anext(rows, None)  # errors (unknown namespace) before the 200 is sent

    async def lines():
        if first is not None:
            yield json.dumps(first) + "\n"
        async for row in rows:
            yield json.dumps(row) + "\n"

    return StreamingResponse(lines(), media_type=NDJSON)


@router.post(
    "/namespaces/{namespace}/import",
    summary="Add prompts' statistics from JSON lines (an export, or offline pass rates)",
    openapi_extra={"requestBody": {"content": {NDJSON: {"schema": {"type": "string"}}}}},
)
async def import_(namespace: Namespace, request: Request, alloc: AllocatorDep) -> ImportOut:
    body = await request.body()  # capped at max_message_bytes (BodyCap: 413)
    try:
        head, rows = parse_import(body)
    except UnicodeDecodeError as e:
        raise InvalidArgument("is not UTF-8 text", field="body") from e
    return ImportOut(**await transfer.import_rows(alloc, namespace, rows, head))
