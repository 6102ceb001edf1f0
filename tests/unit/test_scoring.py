"""The scoring pool with real worker processes: a stuck verifier costs its workers (killed and
replaced), not the caller; verifier errors come back as the same error; the loop stays free."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from krl.common.errors import DeadlineExceeded, InvalidArgument
from krl.rollout.scoring import ScoringPool


def slow(verifier: str, answer: str, texts: list[str]) -> list[float]:
    if answer == "hang":
        time.sleep(3600)
    if answer == "bad":
        raise InvalidArgument("not a reference", field="answer")
    if answer == "pid":
        return [float(os.getpid())]
    if answer == "busy":  # CPU-bound, holding the worker's GIL, not the caller's
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            pass
    return [float(t == answer) for t in texts]


def test_a_stuck_verifier_times_out_and_its_worker_is_replaced() -> None:
    async def main() -> None:
        pool = ScoringPool(1, timeout_s=1.0, fn=slow)
        try:
            [before] = await pool.run("exact", "pid", [])
            t = time.perf_counter()
            with pytest.raises(DeadlineExceeded, match="verify_timeout_s"):
                await pool.run("exact", "hang", ["x"])
            assert time.perf_counter() - t < 3
            with pytest.raises(ProcessLookupError):
                os.kill(int(before), 0)  # the stuck worker is gone
            assert await pool.run("exact", "a", ["a", "b"]) == [1.0, 0.0]
            [after] = await pool.run("exact", "pid", [])
            assert after != before and pool.restarts == 1
        finally:
            pool.stop()

    asyncio.run(main())


def test_verifier_errors_keep_their_class_and_field() -> None:
    async def main() -> None:
        pool = ScoringPool(1, timeout_s=10, fn=slow)
        try:
            with pytest.raises(InvalidArgument) as e:
                await pool.run("exact", "bad", ["x"])
            assert e.value.field == "answer"
        finally:
            pool.stop()

    asyncio.run(main())


def test_the_event_loop_ticks_while_groups_are_scored() -> None:
    async def main() -> None:
        pool = ScoringPool(2, timeout_s=10, fn=slow)
        await pool.warm()
        gaps: list[float] = []

        async def tick() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                gaps.append(time.perf_counter() - t)

        ticker = asyncio.create_task(tick())
        try:
            # three 1 s groups on two workers: the third waits for a slot, not the timeout
            pool.timeout_s = 1.8
            out = await asyncio.gather(*(pool.run("exact", "busy", ["busy"]) for _ in range(3)))
            assert out == [[1.0]] * 3
        finally:
            ticker.cancel()
            pool.stop()
        assert max(gaps) < 0.3

    asyncio.run(main())


def test_stop_kills_a_worker_stuck_in_a_verifier() -> None:
    async def main() -> float:
        pool = ScoringPool(1, timeout_s=3600, fn=slow)
        [pid] = await pool.run("exact", "pid", [])
        task = asyncio.create_task(pool.run("exact", "hang", ["x"]))
        await asyncio.sleep(0.3)
        t = time.perf_counter()
        pool.stop()
        task.cancel()
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
        return time.perf_counter() - t

    assert asyncio.run(main()) < 5


def test_errors_cross_a_process_boundary_with_class_and_field() -> None:
    from krl.common.errors import FailedPrecondition, Unavailable, from_wire, to_wire

    back = from_wire(to_wire(FailedPrecondition("older", field="header.version")))
    assert type(back) is FailedPrecondition and back.field == "header.version"
    assert back.message == "older"
    assert type(from_wire(("Overloaded", "busy", None))) is Unavailable  # needs a retry hint
