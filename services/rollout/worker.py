"""The replica worker: one process that owns one engine and runs the parent's commands in order
over a pipe. Killing it is a real engine death; the parent (replicas.py) restarts it.

Messages parent -> worker:  ("generate", job, items, sampling) | ("load", job, kind, data) | ("stop",)
Messages worker -> parent:  ("ready", info, spec) | ("group", job, key, samples) | ("done", job)
                            | ("error", job, errors.to_wire(e)) | ("loaded", job)
"""

from __future__ import annotations

import logging
import os
import traceback
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
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            job = msg[1]
            try:
                if msg[0] == "generate":
                    for key, samples in engine.generate(msg[2], msg[3]):
                        conn.send(("group", job, key, samples))
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


def _load(engine, kind: str, data: bytes | str) -> None:
    if kind == "bytes":
        from krl.model.weights import from_bytes

        engine.load_weights(from_bytes(data))
    else:
        engine.load_checkpoint(Path(data))
