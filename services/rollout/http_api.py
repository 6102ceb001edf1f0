"""The rollout service's HTTP side: liveness, readiness (every engine replica up), Prometheus
metrics and the engine info."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from krl import __version__
from krl.common.errors import Unavailable
from krl.common.http import (
    bearer_auth,
    install_liveness_and_metrics,
    install_problem_handlers,
    make_app,
)
from krl.rollout.service import Rollout


def build_app(rollout: Rollout, token: str | None) -> FastAPI:
    app = make_app(
        auth_token=token,
        title="knapsack-rl rollout",
        version=__version__,
        description="Engine info, health and metrics of the rollout service.",
    )
    app.state.rollout = rollout
    install_problem_handlers(app)
    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_auth(token))])

    @api.get("/info", summary="Engine, model, policy version, replicas")
    async def info() -> dict[str, Any]:
        i = rollout.pool.info
        return {
            "engine": i.engine,
            "model": i.model,
            "policy_version": rollout.version,
            "replicas": len(rollout.pool.replicas),
            "max_n": rollout.settings.max_n,
            "max_context_tokens": i.max_context_tokens,
            "replicas_ready": sum(r.ready.is_set() for r in rollout.pool.replicas),
            "replica_pids": [r.pid for r in rollout.pool.replicas],
        }

    app.include_router(api)

    install_liveness_and_metrics(app, rollout.metrics.registry)

    @app.get("/readyz", summary="Readiness: every engine replica is up", tags=["ops"])
    async def readyz() -> dict[str, str]:
        down = [r.index for r in rollout.pool.replicas if not r.ready.is_set()]
        if down:
            raise Unavailable(f"not ready: engine replicas {down} are (re)starting")
        return {"status": "ready"}

    return app
