"""What every gRPC server of the project shares: bearer-token auth, the one mapping of the
project's exceptions to status codes, health checking, reflection and a graceful lifecycle
(SIGTERM -> health NOT_SERVING -> stop with grace)."""

from __future__ import annotations

import functools
import hmac
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from krl.common.errors import KrlError
from krl.common.lifecycle import StartupError
from krl_client.errors import RETRY_AFTER_KEY

log = logging.getLogger(__name__)
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` that aborts with UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Require `authorization: Bearer <token>` on every method but health and reflection."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        got_b = got.encode() if isinstance(got, str) else got
        if hmac.compare_digest(got_b, self._expected):
            return handler
        return _denied(handler, "missing or wrong bearer token (metadata 'authorization')")


def unary_errors(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map the project's exceptions raised by a unary servicer method to gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except Exception as e:
            await _abort(self, method.__name__, e, context)

    return wrapper


def stream_errors(method: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """The same mapping for a server-streaming method (an async generator)."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as e:
            await _abort(self, method.__name__, e, context)

    return wrapper


async def _abort(
    servicer: Any, method: str, exc: Exception, context: grpc.aio.ServicerContext
) -> None:
    """The one mapping: a KrlError aborts with its own code; anything else is INTERNAL (logged,
    never shown to the caller). Counted on the servicer's error_counter when it has one."""
    if isinstance(exc, KrlError):
        code, message = exc.grpc_code, str(exc)
    else:
        log.error("unhandled error in %s", method, exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, "internal error (see the server log)"
    counter = getattr(servicer, "error_counter", None)
    if counter is not None:
        counter.labels(method, code.name).inc()
    if (hint := getattr(exc, "retry_after_s", None)) is not None:  # load shedding
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(math.ceil(hint * 1000))),))
    await context.abort(code, message)


class GrpcServer:
    """A grpc.aio server with health and reflection, started on host:port."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        token: str | None,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        interceptors = [BearerAuthInterceptor(token)] if token else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(bind)
        except RuntimeError as e:  # no SO_REUSEPORT: a port another server holds is refused
            raise StartupError(
                f"cannot serve gRPC on {bind}: the port is in use, or not allowed"
            ) from e
        self.host = host

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
