"""The allocator's HTTP API: the /v1 routes (http_routes.py) behind bearer auth, and the
operations endpoints (liveness, readiness, Prometheus metrics)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from krl import __version__
from krl.allocator.api.http_routes import AllocatorDep, router
from krl.allocator.service import Allocator
from krl.common.errors import Unavailable
from krl.common.http import bearer_auth, install_problem_handlers, make_app

ops = APIRouter(tags=["ops"])


@ops.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", summary="Readiness: Redis answers")
async def readyz(alloc: AllocatorDep) -> dict[str, Any]:
    try:
        await alloc.ping()
    except Unavailable as e:
        raise Unavailable(f"not ready: {e.message}") from e
    return {"status": "ready"}


@ops.get("/metrics", summary="Prometheus metrics")
async def metrics(alloc: AllocatorDep) -> Response:
    await alloc.refresh_gauges()
    return Response(generate_latest(alloc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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
    app.include_router(router, prefix="/v1", dependencies=[Depends(bearer_auth(token))])
    app.include_router(ops)
    return app
