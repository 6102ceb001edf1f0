"""Export and import of a namespace's per-prompt statistics (JSON lines), so a run can warm-start
from offline pass rates or move between Redis deployments.

A line of an export:
    {"prompt_id": "q17", "visits": [{"step": 3, "n": 8, "successes": 2}, ...],
     "visit_count": 5, "trials": 40, "successes": 9, "mean_tokens": 212.5}
`visits` are the visits the allocator keeps (history.RECENT_KEPT, oldest first): the evidence
every mode reads. An import takes the same lines, or the short form of an offline pass rate,
    {"prompt_id": "q17", "successes": 3, "trials": 16}            (one visit, at "step" or 0)
and replays each visit as a report of an internal allocation, in step order, through the same
script as a trainer's report: every namespace aggregate (the grid prior's counts, the success
rate, the difficulty histogram) is updated as if the visits had been reported. Lifetime totals
of visits older than the kept ones are not carried. Prompts that already have a record are
refused (409), so an import never counts twice; nothing is written unless every line is valid."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from krl.allocator.history import HEAD_BYTES, RECORD_FIELDS, recent_of, unpack_heads
from krl.allocator.service import MAX_STEP, Allocator, check_namespace
from krl.allocator.store import Outcome
from krl.common.errors import FailedPrecondition, check

EXPORT_CHUNK = 1000


@dataclass(frozen=True)
class Visit:
    step: int
    n: int
    successes: int


@dataclass(frozen=True)
class PromptStatsRow:
    prompt_id: str
    visits: Sequence[Visit]
    mean_tokens: float = 0.0


def export_row(prompt_id: str, raw: bytes) -> dict:
    head = dict(zip(RECORD_FIELDS, unpack_heads(raw[:HEAD_BYTES], 1)[0].tolist(), strict=True))
    return {
        "prompt_id": prompt_id,
        "visits": [{"step": s, "n": n, "successes": k} for s, n, k in recent_of(raw)],
        "visit_count": int(head["visits"]),
        "trials": int(head["trials"]),
        "successes": int(head["successes"]),
        "mean_tokens": head["ts"] / head["tw"] if head["tw"] > 0 else 0.0,
    }


async def export_rows(allocator: Allocator, namespace: str) -> AsyncIterator[dict]:
    """Every prompt of the namespace, in scan order (a prompt reported during the export may or
    may not show its newest visit)."""
    check_namespace(namespace)
    await allocator.store.namespace_meta(namespace)  # NotFound for an unknown namespace
    cursor = 0
    while True:
        ids, cursor = await allocator.store.scan_prompt_ids(namespace, cursor, EXPORT_CHUNK)
        raws = await allocator.store.raw_records(namespace, ids) if ids else []
        for pid, raw in zip(ids, raws, strict=True):
            if raw is not None:
                yield export_row(pid, raw)
        if cursor == 0:
            return


def _validate(allocator: Allocator, rows: Sequence[PromptStatsRow]) -> None:
    limit = allocator.settings.max_import_prompts
    check(
        0 < len(rows) <= limit,
        "lines",
        f"{len(rows)} prompts; between 1 and {limit} (max_import_prompts)",
    )
    seen: set[str] = set()
    max_bytes = allocator.settings.max_prompt_id_bytes
    for i, row in enumerate(rows):
        at = f"lines[{i}]"
        pid = row.prompt_id
        check(
            bool(pid) and len(pid.encode()) <= max_bytes,
            f"{at}.prompt_id",
            f"must be 1 to {max_bytes} bytes",
        )
        check(pid not in seen, f"{at}.prompt_id", f"duplicate prompt id {pid!r}")
        seen.add(pid)
        check(len(row.visits) > 0, f"{at}.visits", "is empty")
        check(
            math.isfinite(row.mean_tokens)
            and 0 <= row.mean_tokens <= allocator.settings.max_tokens_per_rollout,
            f"{at}.mean_tokens",
            "must be a finite number of tokens >= 0",
        )
        for j, v in enumerate(row.visits):
            check(0 <= v.step <= MAX_STEP, f"{at}.visits[{j}].step", f"must be in [0, {MAX_STEP}]")
            check(
                1 <= v.n <= allocator.settings.max_n_limit,
                f"{at}.visits[{j}].n",
                f"must be in [1, {allocator.settings.max_n_limit}]",
            )
            check(0 <= v.successes <= v.n, f"{at}.visits[{j}].successes", f"must be in [0, {v.n}]")


async def import_rows(allocator: Allocator, namespace: str, rows: Sequence[PromptStatsRow]) -> dict:
    """Replay the rows' visits as reports (see the module's doc); returns counts."""
    check_namespace(namespace)
    _validate(allocator, rows)
    store, chunk = allocator.store, allocator.settings.max_batch_prompts
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        raws = await store.raw_records(namespace, [r.prompt_id for r in part])
        for r, raw in zip(part, raws, strict=True):
            if raw is not None:
                raise FailedPrecondition(
                    f"prompt {r.prompt_id!r} already has a history in namespace {namespace!r}; "
                    "an import only adds prompts the namespace has not seen",
                    field="prompt_id",
                )
    # visit j of every prompt, in step order; one internal allocation per (step, j) and chunk,
    # so each prompt's visits are applied oldest first and no allocation holds a prompt twice
    events = sorted(
        (v.step, j, r.prompt_id, v, r.mean_tokens) for r in rows for j, v in enumerate(r.visits)
    )
    groups: list[list[tuple]] = []
    for e in events:
        if not groups or groups[-1][0][:2] != e[:2] or len(groups[-1]) >= chunk:
            groups.append([])
        groups[-1].append(e)
    for group in groups:
        step = group[0][0]
        alloc_id = uuid.uuid4().hex
        n = {pid: v.n for _, _, pid, v, _ in group}
        meta = {"step": step, "mode": "import", "prompts": len(n)}
        await store.save_allocation(namespace, alloc_id, step, meta, n, listed=False)
        await store.report(
            namespace,
            alloc_id,
            [Outcome(pid, v.successes, v.n, round(tok * v.n)) for _, _, pid, v, tok in group],
        )
    return {"prompts": len(rows), "visits": len(events)}
