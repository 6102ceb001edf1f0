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
