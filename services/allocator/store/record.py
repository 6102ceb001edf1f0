"""A prompt's stored record: its byte layout, packing and unpacking (private to the store: the
rest of the allocator sees PromptRecord and BatchHistory)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from krl.common.errors import FailedPrecondition

# A prompt's record in Redis (key krl:{ns}:r:<id>): its head, these 11 fields as little-endian
# doubles, then up to RECENT_KEPT visits (step, n, successes, the namespace's success-rate logit
# in thousandths when it was reported) as little-endian int32s.
# s, f: decayed success / failure evidence as of `step`; visits, trials, successes: lifetime;
# ls, lt: last visit's successes / trials; tw, ts: decayed token weight / token sum;
# lk: last visit's kind (1 all correct, -1 all wrong, 0 mixed).
RECORD_FIELDS = ("s", "f", "step", "visits", "trials", "successes", "ls", "lt", "tw", "ts", "lk")
RECENT_KEPT = 8
RECORD_PREFIX = "r"
"""Key part of prompt records."""
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
"""A whole record, as every report and import writes it (unused visit slots 0xff: they read as
-1)."""
NO_RECORD = b"\xff" * RECORD_BYTES
"""What an unknown prompt reads as: its head NaN, no visit."""


def whole_records(raws: Sequence[bytes | None]) -> bytes:
    """Records as stored (None: the prompt has none) back to back, RECORD_BYTES each, for
    unpack_records. A stored value of any other size was not written by this allocator (a
    report or an import writes whole records): FailedPrecondition, never a misread."""
    out = [NO_RECORD if r is None else r for r in raws]
    bad = next((r for r in out if len(r) != RECORD_BYTES), None)
    if bad is not None:
        raise FailedPrecondition(
            f"a stored prompt record has {len(bad)} bytes, not {RECORD_BYTES}: the namespace "
            "holds keys this allocator did not write"
        )
    return b"".join(out)


def unpack_records(raw: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded records back to back -> (heads: count x 11 doubles, NaN for unknown prompts;
    visits: count x RECENT_KEPT x 4 int32 (step, n, successes, milli-logit), oldest first,
    n = -1 where there is no visit)."""
    buf = np.frombuffer(raw, dtype=np.uint8, count=count * RECORD_BYTES).reshape(count, -1)
    heads = buf[:, :HEAD_BYTES].copy().view(HEAD_DTYPE)
    visits = buf[:, HEAD_BYTES:].copy().view("<i4").reshape(count, RECENT_KEPT, VISIT_FIELDS)
    return heads, visits


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


def export_row(prompt_id: str, raw: bytes) -> dict:
    head = dict(zip(RECORD_FIELDS, unpack_heads(raw[:HEAD_BYTES], 1)[0].tolist(), strict=True))
    return {
        "prompt_id": prompt_id,
        "visits": [{"step": s, "n": n, "successes": k} for s, n, k in recent_of(raw)],
        "visit_count": int(head["visits"]),
        "trials": int(head["trials"]),
        "successes": int(head["successes"]),
        "mean_tokens": head["ts"] / head["tw"] if head["tw"] > 0 else 0.0,
        "record": base64.b64encode(raw).decode(),
    }
