"""The project's exception tree lives with the slim client (krl_client.errors), which maps status
codes back to it; the services raise it from here, with `check` for validation."""

from __future__ import annotations

from krl_client.errors import (  # noqa: F401 - re-exported for the services
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    KrlError,
    NotFound,
    Overloaded,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_grpc_error,
)


def check(condition: bool, field: str, message: str) -> None:
    """Raise InvalidArgument naming the field unless the condition holds."""
    if not condition:
        raise InvalidArgument(message, field=field)


Wire = tuple[str, str, str | None]
_BY_NAME = {
    c.__name__: c
    for c in (
        Aborted,
        DeadlineExceeded,
        FailedPrecondition,
        InvalidArgument,
        KrlError,
        NotFound,
        ResourceExhausted,
        Unauthenticated,
        Unavailable,
    )
}


def to_wire(e: KrlError) -> Wire:
    """An error as plain data, to cross a process boundary (a pipe, a worker pool): pickling
    loses the keyword `field`."""
    return type(e).__name__, e.message, e.field


def from_wire(wire: Wire) -> KrlError:
    """The error again; a name this side does not know (or one needing more, such as
    Overloaded's retry hint) becomes Unavailable."""
    name, message, field = wire
    return _BY_NAME.get(name, Unavailable)(message, field=field)
