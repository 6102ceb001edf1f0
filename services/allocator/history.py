"""Per-prompt history records and the decay of evidence (pure; a report applies the same rule
in record_update.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from krl.allocator import grid
from krl.allocator.prior import RateMoments

# A prompt's record in Redis (key krl:{ns}:r:<id>): its head, these 11 fields as little-endian
# doubles, then up to RECENT_KEPT visits (step, n, successes, the namespace's success-rate logit
# in thousandths when it was reported) as little-endian int32s.
# s, f: decayed success / failure evidence as of `step`; visits, trials, successes: lifetime;
# ls, lt: last visit's successes / trials; tw, ts: decayed token weight / token sum;
# lk: last visit's kind (1 all correct, -1 all wrong, 0 mixed).
RECORD_FIELDS = ("s", "f", "step", "visits", "trials", "successes", "ls", "lt", "tw", "ts", "lk")
RECENT_KEPT = 8
RECORD_PREFIX = "r"
"""Key part of prompt records (layout 2, with the rate logit per visit; layout 1 was 'p')."""
HEAD_DTYPE = np.dtype("<f8")
HEAD_BYTES = len(RECORD_FIELDS) * HEAD_DTYPE.itemsize


def unpack_heads(raw: bytes, count: int) -> np.ndarray:
    """Record heads back to back -> array (count x 11); NaN rows for unknown prompts."""
    return np.frombuffer(raw, dtype=HEAD_DTYPE, count=count * len(RECORD_FIELDS)).reshape(count, -1)


def recent_of(raw: bytes) -> list[tuple[int, int, int]]:
    """The recent visits (step, n, successes) stored after a record's head, oldest first (a
    record is stored whole: unused visit slots are 0xff, n = -1)."""
    tail = np.frombuffer(raw[HEAD_BYTES:], dtype="<i4").reshape(-1, VISIT_FIELDS)
    return [(int(v[0]), int(v[1]), int(v[2])) for v in tail if v[1] != -1]


RATE_KEEP = 1 - 1 / 512
"""The namespace's success rate forgets by this factor per prompt reported (record_update)."""
HIST_BINS = 10
VISIT_FIELDS = 4
VISIT_BYTES = 4 * VISIT_FIELDS
RECORD_BYTES = HEAD_BYTES + RECENT_KEPT * VISIT_BYTES
"""A whole record, as a report writes it and whole_records pads an older, shorter one (0xff
bytes: no visit; they read as -1)."""
NO_RECORD = b"\xff" * RECORD_BYTES
"""What an unknown prompt reads as: its head NaN, no visit."""


def whole_records(raws: Sequence[bytes | None]) -> bytes:
    """Records as stored (None: the prompt has none) back to back, RECORD_BYTES each, for
    unpack_records: a shorter record (an earlier release's) is padded with 0xff."""
    try:
        whole = b"".join(raws)  # type: ignore[arg-type]
        if len(whole) == len(raws) * RECORD_BYTES:  # all whole: each is (records are >= 88 B)
            return whole
    except TypeError:  # a None among them
        pass
    return b"".join(NO_RECORD if r is None else (r + NO_RECORD)[:RECORD_BYTES] for r in raws)


def unpack_records(raw: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded records back to back -> (heads: count x 11 doubles, NaN for unknown prompts;
    visits: count x RECENT_KEPT x 4 int32 (step, n, successes, milli-logit), oldest first,
    n = -1 where there is no visit)."""
    buf = np.frombuffer(raw, dtype=np.uint8, count=count * RECORD_BYTES).reshape(count, -1)
    heads = buf[:, :HEAD_BYTES].copy().view(HEAD_DTYPE)
    visits = buf[:, HEAD_BYTES:].copy().view("<i4").reshape(count, RECENT_KEPT, VISIT_FIELDS)
    return heads, visits


def visit_weights(
    visits: np.ndarray, step: int, visit_half_life: float, half_life_steps: float = 0.0
) -> np.ndarray:
    """Weight of each stored visit (count x K). A visit `a` visits before the prompt's newest
    weighs 2^(-a / visit_half_life) (<= 0: no decay by visits), times
    2^(-(step - its step) / half_life_steps) when that explicit step half-life is > 0; no visit
    weighs 0. The newest visit always weighs 1 by visits, so evidence survives any revisit
    interval: staleness is counted in the prompt's own visits, not in the steps of a dataset of
    unknown size."""
    live = visits[:, :, 1] > 0
    w = live.astype(np.float64)
    if visit_half_life > 0:
        newer = np.cumsum(live[:, ::-1], axis=1)[:, ::-1] - live  # live visits after this one
        w = w * np.exp2(-newer / visit_half_life)
    if half_life_steps > 0:
        age = np.maximum(step - visits[:, :, 0].astype(np.float64), 0.0)
        w = w * np.exp2(-age / half_life_steps)
    return w


def visit_drift(visits: np.ndarray, now_logit: float) -> np.ndarray:
    """How far the namespace's success-rate logit moved since each visit (count x K): the
    policy's measured drift, which a visit's evidence is shifted by (grid.visit_loglik)."""
    return now_logit - visits[:, :, 3].astype(np.float64) / 1000.0


def last_visit_drift(visits: np.ndarray, now_logit: float) -> float:
    """Mean drift since the last visit of the prompts that have one (0.0 when none has)."""
    live = visits[:, :, 1] > 0
    has = live.any(axis=1)
    if not has.any():
        return 0.0
    last = live.shape[1] - 1 - np.argmax(live[:, ::-1], axis=1)
    d = visit_drift(visits, now_logit)[np.arange(live.shape[0]), last]
    return float(d[has].mean())


def eb_posterior(
    prior: np.ndarray,
    visits: np.ndarray,
    now_logit: float | None,
    step: int,
    visit_half_life: float,
    half_life_steps: float = 0.0,
) -> np.ndarray:
    """Each prompt's posterior on grid.GRID (M x grid points) in mode eb: the namespace's grid
    prior moved by the mean drift since the last visits it was fitted to, times the likelihood
    of the prompt's visits, each weighted (visit_weights) and shifted by the drift since it was
    made (grid.visit_loglik). `now_logit` None (nothing reported yet): no drift."""
    w = visit_weights(visits, step, visit_half_life, half_life_steps)
    if now_logit is None:
        drift = np.zeros(w.shape)
    else:
        drift = visit_drift(visits, now_logit)
        prior = grid.shift_prior(prior, last_visit_drift(visits, now_logit))
    loglik = grid.visit_loglik(visits[:, :, 1], visits[:, :, 2], w, drift)
    return grid.posterior_from_loglik(prior, loglik)


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
    visits: np.ndarray | None = None  # batch x RECENT_KEPT x 4 (history.unpack_records)
    rate_logit: float | None = None
    """Logit of the namespace's current success rate (None before any report)."""
    last_visit_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The namespace's last-visit outcomes: (successes, trials, prompts with that pair)."""
