"""Rewards off the event loop. Each finished group is scored in a pool of worker processes (its
reference answer parsed once), under a timeout: a slow or stuck verifier costs its workers, which
are killed and replaced, never the service's event loop, health checks or shutdown."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from krl.common.errors import DeadlineExceeded, KrlError, Unavailable, from_wire, to_wire
from krl.common.parentdeath import die_with_parent
from krl.rollout import verifiers

log = logging.getLogger(__name__)


def _score(fn: Callable[..., list[float]], *args: Any) -> tuple[str, Any]:
    """Runs in a worker. A KrlError comes back as data (errors.to_wire)."""
    try:
        return "ok", fn(*args)
    except KrlError as e:
        return "error", to_wire(e)


class ScoringPool:
    def __init__(
        self, workers: int, timeout_s: float, fn: Callable[..., list[float]] = verifiers.score_group
    ) -> None:
        self.workers, self.timeout_s, self.fn = workers, timeout_s, fn
        self.restarts = 0
        self._slots = asyncio.Semaphore(workers)  # the timeout counts work, not queueing
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs gRPC threads, which fork does not survive. A worker
        # holds both ends of its task queue, so it would outlive a SIGKILLed service: it gets
        # the parent-death signal instead.
        return ProcessPoolExecutor(
            self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )

    async def warm(self) -> None:
        """Start the workers now, so the first group does not wait for them."""
        await asyncio.gather(*(self.run("exact", "0", []) for _ in range(self.workers)))

    async def run(self, verifier: str, answer: str, texts: list[str]) -> list[float]:
        async with self._slots:
            return await self._run(verifier, answer, texts)

    async def _run(self, verifier: str, answer: str, texts: list[str]) -> list[float]:
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            fut = loop.run_in_executor(pool, _score, self.fn, verifier, answer, texts)
            status, value = await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            self._replace(pool)
            raise DeadlineExceeded(
                f"the {verifier!r} verifier took over {self.timeout_s:g} s on one group "
                f"(verify_timeout_s); its workers were replaced",
                field="verifier",
            ) from None
        except BrokenProcessPool:
            self._replace(pool)
            raise Unavailable("a scoring worker died; the pool was restarted") from None
        if status == "error":
            raise from_wire(value)
        return value

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        if pool is not self._pool:
            return  # another group already replaced it
        self.restarts += 1
        self._pool = self._new()
        _kill(pool)

    def stop(self) -> None:
        _kill(self._pool)


def _kill(pool: ProcessPoolExecutor) -> None:
    # The executor has no public way to stop a running task; its processes are killed instead.
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(timeout=5)
