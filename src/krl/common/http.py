"""What every HTTP API of the project shares: RFC 9457 problem details for the project's
exceptions and for request validation, and optional bearer-token auth as a dependency."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from krl.common.errors import KrlError, Unauthenticated

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def make_app(**kw: object) -> FastAPI:
    """A FastAPI app whose /docs (Swagger UI 5) and /redoc load their scripts from this package,
    not from a CDN: air-gapped clusters get a working page."""
    return FastAPIOffline(**kw)


def problem(status: int, title: str, detail: str, instance: str, **extra: object) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(KrlError)
    async def _krl(request: Request, exc: KrlError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        resp = problem(exc.http_status, exc.title, exc.message, request.url.path, field=exc.field)
        if headers:
            resp.headers.update(headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "path", "body"))
        return problem(
            400, "Invalid argument", str(first.get("msg")), request.url.path, field=field or None
        )


_bearer = HTTPBearer(auto_error=False)


def bearer_auth(token: str | None):
    """A dependency that requires the bearer token when one is configured."""
    expected = token.encode() if token else None

    async def check(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if expected is None:
            return
        got = creds.credentials.encode() if creds else b""
        if not hmac.compare_digest(got, expected):
            raise Unauthenticated("missing or wrong bearer token (header 'Authorization')")

    return check


def install_liveness_and_metrics(app: FastAPI, registry: CollectorRegistry) -> None:
    """/healthz (the process answers) and /metrics (the registry's Prometheus text); both open,
    for probes and scrapers."""

    @app.get("/healthz", summary="Liveness", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
