"""Fixtures for the rollout tests: a tiny model folder, and a real `krl rollout` process on
loopback (gRPC + HTTP), stopped by pid when the module is done."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from krl.common.procs import ServiceProcess, free_port


@dataclass
class RolloutProc:
    proc: ServiceProcess
    target: str
    http: str

    def info(self) -> dict:
        with urllib.request.urlopen(f"{self.http}/v1/info", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as r:
            return r.read().decode()


def build_model(folder: Path, seed: int = 0, **shape: object) -> Path:
    from krl.model.tiny import TinyShape, build_tiny_model

    # A larger init spreads the logits, so greedy decoding has no near-ties.
    return build_tiny_model(folder, TinyShape(initializer_range=0.2, **shape), seed=seed)


def start_rollout(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    python: str | None = None,
    timeout_s: float = 120.0,
) -> RolloutProc:
    grpc_port, http_port = free_port(), free_port()
    proc = ServiceProcess(
        ["rollout", "--grpc-port", str(grpc_port), "--http-port", str(http_port), *args],
        f"127.0.0.1:{grpc_port}",
        log_file=tmp / f"rollout-{grpc_port}.log",
        env={"KRL_ROLLOUT_GRACE_S": "0.5", **(env or {})},
    )
    if python:
        proc.args[0] = python
    proc.start(timeout_s)
    return RolloutProc(proc, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny", seed=1)


@pytest.fixture(scope="module")
def rollout_service(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[RolloutProc]:
    tmp = tmp_path_factory.mktemp("rollout")
    svc = start_rollout(
        tmp,
        "--model",
        str(tiny_model),
        "--max-n",
        "64",
        env={"KRL_ROLLOUT_ENGINE__MAX_BATCH_ROWS": "8"},
    )
    yield svc
    assert svc.proc.stop() == 0
    log = next(tmp.glob("rollout-*.log")).read_text()
    sys.stderr.write(log[-2000:] if os.environ.get("KRL_TEST_SHOW_LOGS") else "")
