"""What every HTTP API of the project shares: RFC 9457 problem details for the project's
exceptions, for request validation and for HTTP-level refusals (unknown route, body too large);
an OpenAPI document that says so; and optional bearer-token auth as a dependency."""

from __future__ import annotations

import hmac
import logging
import math
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from krl.common.errors import KrlError, Overloaded, Unauthenticated

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of these APIs is sent."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    field: str | None = None


MAX_BODY_BYTES = 1 << 20  # a default; the allocator sets its own (max_message_bytes)
_WHY = {
    "400": "Invalid argument: the field and the reason; nothing was stored",
    "401": "Missing or wrong bearer token",
    "404": "Unknown namespace, allocation, prompt or route",
    "409": "Conflict with stored state (e.g. an import of prompts the namespace already has)",
    "413": "Request body over the service's limit",
    "429": "Busy (load shedding): retry after the Retry-After header's seconds",
    "503": "A backing part (Redis, an engine) is unavailable; retry",
}


def make_app(
    *, max_body_size: int = MAX_BODY_BYTES, auth_token: str | None = None, **kw: object
) -> FastAPI:
    """A FastAPI app whose /docs (Swagger UI 5) and /redoc load their scripts from this package,
    not from a CDN (air-gapped clusters get a working page); request bodies are capped (413,
    BodyCap); with a token, /v1 needs it before any body is read (BearerGate); its OpenAPI
    document lists the problem-details answers each route can give."""
    app = FastAPIOffline(**kw)
    app.add_middleware(BodyCap, limit=max_body_size)
    if auth_token:
        app.add_middleware(BearerGate, token=auth_token)  # added last: runs first
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            _document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi
    return app


class BodyCap:
    """ASGI middleware: a request body over `limit` bytes gets a 413 problem, by its declared
    Content-Length before anything is read, or, for a body sent without one (chunked), by reading
    it here up to the limit before the app sees any of it (the app's own body parsing would
    turn the refusal into a 400)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server delivers at most what it declared
            return
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        resp = problem(
            413,
            "Content too large",
            f"the request body is over {self.limit} bytes",
            scope.get("path", ""),
        )
        await resp(scope, receive, send)


class BearerGate:
    """ASGI middleware: under `prefix`, a request without the bearer token is a 401 problem
    before its body is read (the routes' bearer_auth dependency runs only after FastAPI has
    read and parsed the body)."""

    def __init__(self, app: Any, token: str, prefix: str = "/v1") -> None:
        self.app, self.expected, self.prefix = app, token.encode(), prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.prefix):
            scheme, _, got = (
                dict(scope.get("headers", ())).get(b"authorization", b"").partition(b" ")
            )
            if not (scheme.lower() == b"bearer" and token_matches(got.strip(), self.expected)):
                resp = problem(
                    401,
                    "Unauthenticated",
                    "missing or wrong bearer token (header 'Authorization')",
                    scope.get("path", ""),
                )
                resp.headers["WWW-Authenticate"] = "Bearer"
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _document_problems(schema: dict) -> None:
    """400 problem details instead of FastAPI's 422; 401/404/409/413/503 where they can occur;
    /metrics as Prometheus text."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            codes = set()
            if op.get("parameters") or op.get("requestBody"):
                codes.add("400")
            if op.get("security"):
                codes.add("401")
            if "{" in path:
                codes.add("404")
            if method in ("post", "put", "patch"):
                codes.update(("409", "413"))
            if path.startswith("/v1") or path == "/readyz":
                codes.add("503")
            if path.endswith("/allocations") and method == "post":
                codes.add("429")
            for code in sorted(codes):
                responses.setdefault(code, {"description": _WHY[code]})
                responses[code]["content"] = {PROBLEM: {"schema": ref}}
            if path == "/metrics":
                responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}


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
        resp = problem(exc.http_status, exc.title, exc.message, request.url.path, field=exc.field)
        if isinstance(exc, Unauthenticated):
            resp.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, Overloaded):
            resp.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return resp

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # unknown routes (404), wrong methods (405), bodies over the cap (413), ...
        title = {404: "Not found", 405: "Method not allowed", 413: "Content too large"}
        resp = problem(
            exc.status_code,
            title.get(exc.status_code, "HTTP error"),
            str(exc.detail),
            request.url.path,
        )
        resp.headers.update(exc.headers or {})  # a 405's Allow
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "path", "body"))
        return problem(
            400, "Invalid argument", str(first.get("msg")), request.url.path, field=field or None
        )


_bearer = HTTPBearer(auto_error=False)


def token_matches(got: bytes, expected: bytes) -> bool:
    """The one comparison of a presented token (constant time)."""
    return hmac.compare_digest(got, expected)


def bearer_auth(token: str | None):
    """A dependency that requires the bearer token when one is configured."""
    expected = token.encode() if token else None

    async def check(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if expected is None:
            return
        got = creds.credentials.encode() if creds else b""
        if not token_matches(got, expected):
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
