"""The trainer's HTTP side: liveness, Prometheus metrics and the run's status as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from krl import __version__
from krl.common.http import (
    bearer_auth,
    install_liveness_and_metrics,
    install_problem_handlers,
    make_app,
)
from krl.rl.runlog import json_safe
from krl.trainer.build import TrainerRun


def build_app(trainer: TrainerRun, token: str | None) -> FastAPI:
    app = make_app(
        auth_token=token,
        title="knapsack-rl trainer",
        version=__version__,
        description="Status, health and metrics of the training loop.",
    )
    install_problem_handlers(app)
    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_auth(token))])

    @api.get("/status", summary="State, step, reward, effective ratio, held-out accuracy")
    async def status() -> dict[str, Any]:
        return json_safe(
            {
                "state": trainer.control.state,
                "error": trainer.control.error,
                "run_dir": str(trainer.run_dir),
                "namespace": trainer.s.run_namespace,
                "strategy": trainer.s.strategy,
                "last_checkpoint": trainer.control.last_checkpoint,
                **asdict(trainer.status),
            }
        )

    app.include_router(api)
    install_liveness_and_metrics(app, trainer.metrics.registry)
    return app
