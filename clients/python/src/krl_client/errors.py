"""The project's one exception tree. Each class carries its gRPC status and its HTTP status, so
one adapter per protocol maps any of them. It ships with the slim client because the client maps
status codes back to it; the services import it through krl.common.errors."""

from __future__ import annotations

import grpc


class KrlError(Exception):
    """Base of every error a service reports to its callers."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    title = "Internal error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(KrlError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    title = "Invalid argument"


class NotFound(KrlError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    title = "Not found"


class FailedPrecondition(KrlError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    title = "Failed precondition"


class ResourceExhausted(KrlError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    title = "Resource exhausted"


class Overloaded(ResourceExhausted):
    """Load shedding: the server is busy now; it says when to try again (gRPC trailing metadata
    `retry-after-ms`, HTTP `Retry-After`), and only this RESOURCE_EXHAUSTED is retried."""

    def __init__(self, message: str, *, retry_after_s: float, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class Aborted(KrlError):
    """A conflict with state another request changed; the request can be retried as a whole."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    title = "Aborted"


class Unauthenticated(KrlError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    title = "Unauthenticated"


class Unavailable(KrlError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    title = "Service unavailable"


class DeadlineExceeded(KrlError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    title = "Deadline exceeded"


_BY_GRPC_CODE = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Aborted,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
    )
}


def from_grpc_error(err: grpc.RpcError) -> KrlError:
    """The client side of the mapping: a gRPC error back into the project's exception."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    cls = _BY_GRPC_CODE.get(code, KrlError)
    out = cls(details or code.name)
    out.__cause__ = err
    return out


RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,  # a report that met concurrent ones stored nothing
    }
)
"""The only codes a client retries: the server is away, slow, shedding load, or a report met
concurrent ones (ABORTED: nothing stored; reports count once anyway). A limit is
INVALID_ARGUMENT and is never retried; RESOURCE_EXHAUSTED only with a retry-after-ms hint (load
shedding), not gRPC's own refusal of a message over the size limit."""
RETRY_AFTER_KEY = "retry-after-ms"


def retry_after_s(err: grpc.RpcError) -> float | None:
    """The server's retry hint on a failed call, in seconds, or None."""
    try:
        metadata = err.trailing_metadata() or ()
    except Exception:  # a channel-level error carries none
        return None
    for key, value in metadata:
        if key == RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


def retryable(err: grpc.RpcError) -> bool:
    code = err.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return retry_after_s(err) is not None
    return code in RETRYABLE_CODES
