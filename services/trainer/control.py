"""The trainer's control state: what the gRPC side asks (pause, resume, stop, checkpoint),
acted on by the loop between steps, and the status it reports back."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

STARTING, RUNNING, PAUSED, STOPPING, FINISHED, FAILED = (
    "starting",
    "running",
    "paused",
    "stopping",
    "finished",
    "failed",
)


class Control:
    """Thread-safe requests from the gRPC side, acted on between steps."""

    def __init__(self) -> None:
        self.state = STARTING
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self.stop_requested = False
        self.checkpoint_on_stop = True
        self._ckpt_requests: list[threading.Event] = []
        self.last_checkpoint = ""
        self.error = ""

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def stop(self, checkpoint: bool = True) -> None:
        with self._lock:
            self.stop_requested = True
            self.checkpoint_on_stop = checkpoint
        self._resume.set()

    def request_checkpoint(self) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            self._ckpt_requests.append(ev)
        return ev

    def take_checkpoint_requests(self) -> list[threading.Event]:
        with self._lock:
            out, self._ckpt_requests = self._ckpt_requests, []
        return out

    def wait_if_paused(self, on_pause: Callable[[], None]) -> None:
        if not self._resume.is_set():
            self.state = PAUSED
            on_pause()
            self._resume.wait()
            if not self.stop_requested:
                self.state = RUNNING


@dataclass
class Status:
    step: int = 0
    total_steps: int = 0
    policy_version: int = 0
    mean_reward: float = math.nan
    effective_rollout_ratio: float = math.nan
    heldout_accuracy: float = math.nan
