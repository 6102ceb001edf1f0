"""What every client of the project shares: one channel with message limits, the bearer token,
per-attempt deadlines, and jittered exponential backoff on the retryable codes only
(errors.RETRYABLE_CODES), each wait capped (max_backoff_s) so that a caller riding out a long
outage tries again soon after the service is back; from the third retry on, each one is logged
(logger "krl_client": target, code, attempt, wait). A failed call comes back as the project's
exception (errors.py).

Retries are a loop here rather than gRPC's service-config retry policy: a service config caps a
call at 5 attempts inside one deadline, while a trainer must ride out a restart of several
seconds with a fresh deadline per attempt. Every retried call is safe to repeat: Allocate only
creates an allocation, and a report counts once per (allocation id, prompt)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from krl_client.errors import from_grpc_error, retry_after_s, retryable

T = TypeVar("T")
log = logging.getLogger("krl_client")
QUIET_RETRIES = 2
"""Retries logged at DEBUG only (a blip); the later ones at WARNING (an outage someone should see)."""


# gRPC's own reconnect backoff starts at 1 s and grows to 120 s: after a restart of a few
# seconds a channel could stay in TRANSIENT_FAILURE for many seconds after the service was back,
# failing every retry of ours in the meantime. Restarts here are short; reconnect soon (the
# connect timeout, grpc.min_reconnect_backoff_ms, stays at its 20 s default for slow networks).
RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        *RECONNECT_OPTIONS,
    ]


class _Base:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.1,
        max_backoff_s: float = 30.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if retries < 0 or timeout_s <= 0 or backoff_s < 0 or max_backoff_s < backoff_s:
            raise ValueError(
                "retries and backoff_s must be >= 0, timeout_s > 0 and max_backoff_s >= backoff_s"
            )
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_message_bytes = max_message_bytes
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _backoff(self, attempt: int, err: grpc.RpcError | None = None) -> float:
        """The wait before retry attempt + 1: backoff_s doubling, capped at max_backoff_s, times
        a jitter in [0.5, 1.5); at least what the server asked for (retry-after). The retry of
        `err` is logged here, the one place every retry loop passes through."""
        wait = min(self.backoff_s * 2.0 ** min(attempt, 62), self.max_backoff_s)
        wait *= 0.5 + random.random()
        hint = retry_after_s(err) if err is not None else None
        wait = max(wait, hint * (1 + 0.2 * random.random())) if hint is not None else wait
        level = logging.WARNING if attempt >= QUIET_RETRIES else logging.DEBUG
        if err is not None and log.isEnabledFor(level):
            log.log(
                level,
                "%s answered %s (%s); retry %d of %d in %.1f s",
                self.target,
                err.code().name,
                (err.details() or "")[:200],
                attempt + 1,
                self.retries,
                wait,
            )
        return wait

    def _give_up(self, err: grpc.RpcError, attempt: int) -> bool:
        return not retryable(err) or attempt >= self.retries


class GrpcClient(_Base):
    """A synchronous client: subclasses make stubs on self._channel and call self._call."""

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self._channel = grpc.insecure_channel(
            target, options=channel_options(self.max_message_bytes)
        )

    def _sleep_before_retry(self, attempt: int, err: grpc.RpcError | None = None) -> None:
        time.sleep(self._backoff(attempt, err))

    def _call(self, method: Callable[..., T], request: Any, timeout_s: float | None = None) -> T:
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
            except grpc.RpcError as e:
                if self._give_up(e, attempt):
                    raise from_grpc_error(e) from e
                self._sleep_before_retry(attempt, e)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGrpcClient(_Base):
    """An asyncio client (grpc.aio): create it inside the event loop that will use it."""

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self._channel = grpc.aio.insecure_channel(
            target, options=channel_options(self.max_message_bytes)
        )

    async def _call(
        self, method: Callable[..., Awaitable[T]], request: Any, timeout_s: float | None = None
    ) -> T:
        for attempt in range(self.retries + 1):
            try:
                return await method(
                    request, timeout=timeout_s or self.timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as e:
                if self._give_up(e, attempt):
                    raise from_grpc_error(e) from e
                await asyncio.sleep(self._backoff(attempt, e))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
