"""The replica worker: one process that owns one engine and runs the parent's commands in order
over a pipe. Killing it is a real engine death; the parent (replicas.py) restarts it.

Messages parent -> worker:  ("generate", job, items, sampling) | ("load", job, kind, data)
                            | ("cancel", job) | ("stop",)
Messages worker -> parent:  ("ready", info, spec) | ("group", job, key, samples) | ("done", job)
                            | ("error", job, errors.to_wire(e)) | ("loaded", job)
A cancelled generate stops at the engine's next check (a chunk of rows, a step, a group) and
answers "done"; one cancelled before it started is not run. Messages read while checking for a
cancel are kept, in order, for after the job.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path

from krl.common.errors import KrlError, Unavailable, to_wire

log = logging.getLogger("krl.rollout.worker")


def run(conn: Connection, config_json: str, threads: int, log_level: str) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from pydantic import TypeAdapter

    from krl.rollout.engines.config import EngineConfig, make_engine

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = TypeAdapter(EngineConfig).validate_json(config_json)
    engine = make_engine(cfg)
    conn.send(("ready", engine.info(), engine.weight_spec()))
    inbox = _Inbox(conn)
    try:
        while True:
            msg = inbox.next()
            if msg[0] == "stop":
                return
            if msg[0] == "cancel":
                continue  # of a job already finished
            job = msg[1]
            try:
                if msg[0] == "generate":
                    engine.cancelled = lambda job=job: inbox.is_cancelled(job)
                    if not inbox.is_cancelled(job):
                        for key, samples in engine.generate(msg[2], msg[3]):
                            conn.send(("group", job, key, samples))
                            if inbox.is_cancelled(job):
                                break
                    conn.send(("done", job))
                elif msg[0] == "load":
                    _load(engine, msg[2], msg[3])
                    conn.send(("loaded", job))
            except KrlError as e:
                conn.send(("error", job, to_wire(e)))
            except Exception as e:
                log.error("engine error: %s", traceback.format_exc())
                conn.send(
                    ("error", job, to_wire(Unavailable(f"engine error: {type(e).__name__}: {e}")))
                )
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        engine.close()


class _Inbox:
    """The parent's messages: read in order, with cancels noted as soon as they are read."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.kept: deque = deque()
        self.cancelled: set[int] = set()

    def next(self) -> tuple:
        return self.kept.popleft() if self.kept else self._note(self.conn.recv())

    def _note(self, msg: tuple) -> tuple:
        if msg[0] == "cancel":
            self.cancelled.add(msg[1])
        return msg

    def is_cancelled(self, job: int) -> bool:
        while self.conn.poll():
            msg = self._note(self.conn.recv())
            if msg[0] != "cancel":
                self.kept.append(msg)
        return job in self.cancelled


def _load(engine, kind: str, data: bytes | str) -> None:
    if kind == "bytes":
        from krl.model.weights import from_bytes

        engine.load_weights(from_bytes(data))
    else:
        engine.load_checkpoint(Path(data))
