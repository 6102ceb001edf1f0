"""What every sync client of the project shares: one channel with message limits, the bearer
token, deadlines, and exponential-backoff retries on UNAVAILABLE, DEADLINE_EXCEEDED and
RESOURCE_EXHAUSTED only. Errors come back as the project's exceptions."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from krl.common.errors import from_grpc_error

T = TypeVar("T")
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class GrpcClient:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.1,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )

    def _sleep_before_retry(self, attempt: int) -> None:
        time.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))

    def _call(self, method: Callable[..., T], request: Any, timeout_s: float | None = None) -> T:
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout_s or self.timeout_s,
                              metadata=self._metadata)  # fmt: skip
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE or attempt == self.retries:
                    raise from_grpc_error(e) from e
                self._sleep_before_retry(attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
