"""Per-prompt history records and the decay of evidence (pure; the Lua report script applies
the same rule atomically inside Redis: lua/report.lua)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from krl.allocator.prior import RateMoments

# A prompt's record in Redis (key krl:{ns}:p:<id>): its head, these 11 fields as little-endian
# doubles, then up to RECENT_KEPT visits (step, n, successes) as little-endian int32s.
# s, f: decayed success / failure evidence as of `step`; visits, trials, successes: lifetime;
# ls, lt: last visit's successes / trials; tw, ts: decayed token weight / token sum;
# lk: last visit's kind (1 all correct, -1 all wrong, 0 mixed).
RECORD_FIELDS = ("s", "f", "step", "visits", "trials", "successes", "ls", "lt", "tw", "ts", "lk")
RECENT_KEPT = 8
HEAD_DTYPE = np.dtype("<f8")
HEAD_BYTES = len(RECORD_FIELDS) * HEAD_DTYPE.itemsize


def unpack_heads(raw: bytes, count: int) -> np.ndarray:
    """Record heads back to back -> array (count x 11); NaN rows for unknown prompts."""
    return np.frombuffer(raw, dtype=HEAD_DTYPE, count=count * len(RECORD_FIELDS)).reshape(count, -1)


def recent_of(raw: bytes) -> list[tuple[int, int, int]]:
    """The recent visits (step, n, successes) stored after a record's head, oldest first."""
    tail = np.frombuffer(raw[HEAD_BYTES:], dtype="<i4").reshape(-1, 3)
    return [(int(s), int(n), int(k)) for s, n, k in tail]


HIST_BINS = 10


def decay_factor(step: np.ndarray | float, last_step: np.ndarray | float, half_life: float):
    """Weight of evidence recorded at last_step, seen from step: 2^-((step - last)/half_life).
    half_life <= 0 means no decay; evidence is never weighted above 1."""
    if half_life <= 0:
        return np.ones_like(np.asarray(step, dtype=np.float64) - last_step)
    age = np.maximum(np.asarray(step, dtype=np.float64) - last_step, 0.0)
    return np.exp2(-age / half_life)


@dataclass
class PromptRecord:
    prompt_id: str
    found: bool = False
    evidence_successes: float = 0.0
    evidence_failures: float = 0.0
    last_step: int = 0
    visits: int = 0
    trials: int = 0
    successes: int = 0
    last_successes: int = 0
    last_trials: int = 0
    mean_tokens: float = 0.0
    recent: list[tuple[int, int, int]] = field(default_factory=list)
    """(step, n, successes) of the latest visits, newest last."""


@dataclass
class BatchHistory:
    """Arrays over a batch, evidence decayed to the allocation's step."""

    evidence_successes: np.ndarray
    evidence_failures: np.ndarray
    last_successes: np.ndarray
    last_trials: np.ndarray
    mean_tokens: np.ndarray  # NaN where the prompt has no token history
    moments: RateMoments
    tokens_mean_namespace: float  # NaN when the namespace has no token history
