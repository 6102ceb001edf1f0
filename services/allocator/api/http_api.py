"""HTTP API of the allocator (FastAPI; OpenAPI docs at /docs): read allocation state here, and
allocate, report, list, export and import through http_write.py; health and Prometheus /metrics.
Built by a factory; state hangs on app.state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from krl import __version__
from krl.allocator.api.http_write import AllocationOut, Namespace, add_write_routes
from krl.allocator.service import ALLOCATION_ID_RE, Allocator
from krl.common.errors import Unavailable
from krl.common.http import bearer_auth, install_problem_handlers, make_app


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
    prior_alpha: float = Field(description="Mode bayes's Beta prior.")
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


def _allocator(request: Request) -> Allocator:
    return request.app.state.allocator


AllocatorDep = Annotated[Allocator, Depends(_allocator)]


def build_app(allocator: Allocator, token: str | None) -> FastAPI:
    app = make_app(
        auth_token=token,
        max_body_size=allocator.settings.max_message_bytes,
        title="knapsack-rl allocator",
        version=__version__,
        description="Allocate rollouts and report outcomes (as over gRPC), read allocation "
        "state (namespaces, summaries, prompt histories, allocations), export and import "
        "per-prompt statistics.",
    )
    app.state.allocator = allocator
    install_problem_handlers(app)
    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_auth(token))])

    @api.get("/namespaces", summary="Namespaces with histories")
    async def namespaces(alloc: AllocatorDep) -> list[str]:
        return await alloc.namespaces()

    @api.get("/namespaces/{namespace}", summary="A namespace's summary")
    async def summary(namespace: Namespace, alloc: AllocatorDep) -> NamespaceSummaryOut:
        s = await alloc.summary(namespace)
        return NamespaceSummaryOut(**s.__dict__)

    @api.get(
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

    @api.get(
        "/namespaces/{namespace}/allocations/{allocation_id}", summary="An allocation, or 'latest'"
    )
    async def allocation(
        namespace: Namespace, allocation_id: LatestOrId, alloc: AllocatorDep
    ) -> AllocationOut:
        return AllocationOut(**await alloc.allocation(namespace, allocation_id))

    add_write_routes(api)
    app.include_router(api)

    @app.get("/healthz", summary="Liveness", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: Redis answers", tags=["ops"])
    async def readyz(alloc: AllocatorDep) -> dict[str, Any]:
        try:
            await alloc.ping()
        except Unavailable as e:
            raise Unavailable(f"not ready: {e.message}") from e
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics", tags=["ops"])
    async def metrics(alloc: AllocatorDep) -> Response:
        await alloc.refresh_gauges()
        return Response(generate_latest(alloc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
