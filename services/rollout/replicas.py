"""Engine replicas as worker processes, seen from the service: start, restart on death (with
the current weights replayed), run a split batch across them, load weights into all of them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from krl.common.errors import KrlError, Unavailable, from_wire, to_wire
from krl.rollout import worker
from krl.rollout.engines.base import EngineInfo, GenItem, Sample, Sampling

log = logging.getLogger(__name__)
_jobs = itertools.count(1)


class Replica:
    """One worker process and the reader thread that turns its messages into asyncio events."""

    def __init__(
        self, index: int, config_json: str, threads: int, log_level: str, on_death: Any
    ) -> None:
        self.index = index
        self._args = (config_json, threads, log_level)
        self._on_death = on_death
        self.jobs: dict[int, asyncio.Queue] = {}
        self.proc: mp.process.BaseProcess | None = None
        self.ready = asyncio.Event()
        self.info: EngineInfo | None = None
        self.spec: Any = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.conn = parent
        self.ready.clear()
        self.proc = ctx.Process(
            target=worker.run,
            args=(child, *self._args),
            daemon=True,
            name=f"krl-rollout-replica-{self.index}",
        )
        self.proc.start()
        child.close()
        first: asyncio.Future = loop.create_future()
        threading.Thread(target=self._read, args=(loop, parent, first), daemon=True).start()
        try:
            _, self.info, self.spec = await asyncio.wait_for(first, timeout_s)
        except (TimeoutError, EOFError) as e:
            self.kill()
            raise Unavailable(f"replica {self.index} did not start: {e!r}") from None
        self.ready.set()

    def _read(self, loop: asyncio.AbstractEventLoop, conn: Any, first: asyncio.Future) -> None:
        try:
            msg = conn.recv()
            loop.call_soon_threadsafe(first.set_result, msg)
            while True:
                msg = conn.recv()
                loop.call_soon_threadsafe(self._deliver, msg)
        except (EOFError, OSError) as e:
            if not first.done():
                loop.call_soon_threadsafe(_set_exc, first, EOFError(str(e) or "worker exited"))
            loop.call_soon_threadsafe(self._died, conn)

    def _deliver(self, msg: tuple) -> None:
        q = self.jobs.get(msg[1])
        if q is not None:
            q.put_nowait((self.index, msg))

    def _died(self, conn: Any) -> None:
        if conn is not self.conn:
            return  # an older incarnation's reader
        self.ready.clear()
        for job, q in self.jobs.items():
            q.put_nowait((self.index, ("error", job, to_wire(Unavailable("engine replica died")))))
        if not self.stopping:
            self._on_death(self)

    def send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (OSError, ValueError) as e:
            raise Unavailable(f"replica {self.index} is down: {e}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.stopping = True
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("stop",))
        await asyncio.to_thread(self.proc.join, timeout_s)
        self.kill()


def _set_exc(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class ReplicaPool:
    def __init__(
        self,
        config_json: str,
        replicas: int,
        threads: int,
        log_level: str = "WARNING",
        start_timeout_s: float = 600.0,
        metrics: Any = None,
    ) -> None:
        self.replicas = [
            Replica(i, config_json, threads, log_level, self._restart_later)
            for i in range(replicas)
        ]
        self.start_timeout_s = start_timeout_s
        self.metrics = metrics
        self.weights: tuple[str, Any] | None = None  # replayed into a restarted replica
        self._restarts: set[asyncio.Task] = set()

    @property
    def info(self) -> EngineInfo:
        return self.replicas[0].info  # type: ignore[return-value]

    @property
    def spec(self) -> Any:
        return self.replicas[0].spec

    async def start(self) -> None:
        await asyncio.gather(*(r.start(self.start_timeout_s) for r in self.replicas))

    async def stop(self) -> None:
        for t in self._restarts:
            t.cancel()
        await asyncio.gather(*(r.stop() for r in self.replicas))

    def _restart_later(self, replica: Replica) -> None:
        log.error("engine replica %d (pid %s) died; restarting it", replica.index, replica.pid)
        if self.metrics is not None:
            self.metrics.engine_restarts.inc()
        task = asyncio.get_running_loop().create_task(self._restart(replica))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, replica: Replica) -> None:
        while not replica.stopping:
            try:
                await replica.start(self.start_timeout_s)
                if self.weights is not None:
                    await self._load_one(replica, *self.weights)
                log.info("engine replica %d restarted (pid %s)", replica.index, replica.pid)
                return
            except KrlError as e:
                log.error("restarting replica %d failed: %s; retrying in 2s", replica.index, e)
                replica.ready.clear()
                await asyncio.sleep(2.0)

    async def _ready(self, replica: Replica) -> None:
        try:
            await asyncio.wait_for(replica.ready.wait(), self.start_timeout_s)
        except TimeoutError:
            raise Unavailable(f"engine replica {replica.index} is restarting") from None

    async def generate(
        self, parts: list[list[GenItem]], sampling: Sampling
    ) -> AsyncIterator[tuple[tuple[int, int], list[Sample]]]:
        """Run parts[r] on replica r; yield groups as they finish. A failed replica does not
        stop the others: their groups are still delivered, then the error is raised."""
        queue: asyncio.Queue = asyncio.Queue()
        running: dict[int, int] = {}
        try:
            for r, items in zip(self.replicas, parts, strict=True):
                if not items:
                    continue
                await self._ready(r)
                job = next(_jobs)
                r.jobs[job] = queue
                running[r.index] = job
                r.send(("generate", job, items, sampling))
            failure: KrlError | None = None
            while running:
                index, msg = await queue.get()
                if msg[0] == "group":
                    yield msg[2], msg[3]
                elif msg[0] in ("done", "error"):
                    self.replicas[index].jobs.pop(running.pop(index), None)
                    if msg[0] == "error" and failure is None:
                        failure = from_wire(msg[2])
            if failure is not None:
                raise failure
        finally:
            for index, job in running.items():  # the caller has gone: stop the engines' work
                r = self.replicas[index]
                r.jobs.pop(job, None)
                with contextlib.suppress(Unavailable):
                    r.send(("cancel", job))

    async def load(self, kind: str, data: Any) -> float:
        """Load weights into every replica; on any failure the previous weights are restored
        everywhere, so all replicas always serve the same version. Returns seconds taken."""
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(self._load_one(r, kind, data) for r in self.replicas), return_exceptions=True
        )
        errors = [e for e in results if isinstance(e, BaseException)]
        if errors:
            await self._restore()
            raise errors[0] if isinstance(errors[0], KrlError) else Unavailable(str(errors[0]))
        self.weights = (kind, data)
        return time.perf_counter() - t0

    async def _restore(self) -> None:
        for r in self.replicas:
            if self.weights is not None:
                try:
                    await self._load_one(r, *self.weights)
                    continue
                except KrlError:
                    pass
            r.kill()  # restarts with the base weights (and replays self.weights)

    async def _load_one(self, r: Replica, kind: str, data: Any) -> None:
        await self._ready(r)
        queue: asyncio.Queue = asyncio.Queue()
        job = next(_jobs)
        r.jobs[job] = queue
        try:
            await asyncio.to_thread(r.send, ("load", job, kind, data))
            _, msg = await queue.get()
        finally:
            r.jobs.pop(job, None)
        if msg[0] == "error":
            raise from_wire(msg[2])
