"""Export and import of a namespace's per-prompt statistics (JSON lines), so a run can warm-start
from offline pass rates or move between Redis deployments.

An export's first line is the namespace's own aggregates,
    {"namespace": {"rate_s": 41.2, "rate_w": 96.5, "tok_w": 3072, "tok_sum": 651264.0}}
then one line per prompt:
    {"prompt_id": "q17", "visits": [{"step": 3, "n": 8, "successes": 2}, ...],
     "visit_count": 5, "trials": 40, "successes": 9, "mean_tokens": 212.5, "record": "<base64>"}
`visits` are the visits the allocator keeps (history.RECENT_KEPT, oldest first): the evidence
every mode reads; `record` is the stored record itself, so an export imported into an empty
namespace allocates exactly as the original. An import takes the same lines, lines without
`record` (visits written by hand), or the short form of an offline pass rate,
    {"prompt_id": "q17", "successes": 3, "trials": 16}            (one visit, at "step" or 0)
whose visits are replayed oldest first as a trainer's reports would apply them. Every namespace
aggregate (the grid prior's counts, the success rate, the difficulty histogram) follows.

Nothing is written unless every line is valid and no prompt already has a history of its own
(409). Each prompt is then stored whole in one transaction (import_write.py) with a mark of its
line, so an import cut off by an outage is finished by sending it again, and the same line sent
twice, one after the other or at once, counts once."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from krl.allocator.service import Allocator
from krl.allocator.store import (
    META_FIELDS,
    RECENT_KEPT,
    ImportPrompt,
    NamespaceLine,
    check_record,
    export_row,
    recent_of,
)
from krl.allocator.usecase import MAX_STEP, check_namespace
from krl.common.errors import FailedPrecondition, check

NAMESPACE_FIELDS = ("rate_s", "rate_w", "tok_w", "tok_sum")
"""An export's namespace line: what the prompts' records do not carry, added to the
destination's. The line also carries the aggregates the records do give (META_FIELDS): an import
of the whole export takes their float sums as they were, bit for bit, so ties in a solve break
as in the original."""

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
    record: bytes | None = None
    """An export's stored record: imported as it is (visits and mean_tokens then ignored)."""


async def export_rows(allocator: Allocator, namespace: str) -> AsyncIterator[dict]:
    """The namespace line, then every prompt of the namespace, in scan order (a prompt
    reported during the export may or may not show its newest visit)."""
    check_namespace(namespace)
    meta = await allocator.store.namespace_meta(namespace)  # NotFound for an unknown namespace
    yield {"namespace": {k: meta.get(k, 0.0) for k in META_FIELDS}}
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
        if row.record is not None:
            bad = check_record(row.record, allocator.settings.max_n_limit, MAX_STEP)
            check(bad is None, f"{at}.record", bad or "")
            continue
        check(len(row.visits) > 0, f"{at}.visits", "is empty")
        check(
            len(row.visits) <= RECENT_KEPT,
            f"{at}.visits",
            f"{len(row.visits)} visits; at most {RECENT_KEPT} (what the allocator keeps of a prompt)",
        )
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


def _check_namespace_line(line: dict[str, float] | None) -> None:
    if line is None:
        return
    extra = sorted(set(line) - set(META_FIELDS))
    check(not extra, f"namespace.{extra[0] if extra else ''}", "is not a namespace field")
    for k in set(META_FIELDS) & set(line) | set(NAMESPACE_FIELDS):
        x = line.get(k)
        check(
            isinstance(x, (int, float)) and math.isfinite(x) and x >= 0,
            f"namespace.{k}",
            "must be a finite number >= 0",
        )
    check(line["rate_s"] <= line["rate_w"], "namespace.rate_s", "must be <= rate_w")


def _digest(*parts) -> bytes:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).digest()[:16]


def _prompt(row: PromptStatsRow) -> ImportPrompt:
    record = base64.b64encode(row.record).decode() if row.record is not None else None
    if row.record is None:
        visits = [(v.step, v.n, v.successes) for v in row.visits]
    else:
        visits = recent_of(row.record)
    tokens = row.mean_tokens if record is None else 0.0
    return ImportPrompt(
        row.prompt_id, _digest(row.prompt_id, visits, tokens, record), row.record, visits, tokens
    )


async def import_rows(
    allocator: Allocator,
    namespace: str,
    rows: Sequence[PromptStatsRow],
    namespace_line: dict[str, float] | None = None,
) -> dict:
    """Store the rows' prompts (see the module's doc); returns counts: prompts stored, their
    visits, and prompts skipped because an earlier attempt of the same lines stored them."""
    check_namespace(namespace)
    _validate(allocator, rows)
    _check_namespace_line(namespace_line)
    store, chunk = allocator.store, allocator.settings.max_batch_prompts
    prompts = [_prompt(r) for r in rows]
    line = None
    if namespace_line is not None:
        values = [float(namespace_line[k]) for k in NAMESPACE_FIELDS]
        line = NamespaceLine(_digest(values, [p.digest.hex() for p in prompts]), *values)
    for start in range(0, len(prompts), chunk):  # every conflict refused before any write
        part = prompts[start : start + chunk]
        raws = await store.raw_records(namespace, [p.prompt_id for p in part])
        marks = await store.import_marks(namespace, [p.prompt_id for p in part])
        for p, raw, mark in zip(part, raws, marks, strict=True):
            if raw is not None and mark != p.digest:
                raise FailedPrecondition(
                    f"prompt {p.prompt_id!r} already has a history in namespace {namespace!r}; "
                    "an import only adds prompts the namespace has not seen",
                    field="prompt_id",
                )
    stored = skipped = visits = 0
    for start in range(0, len(prompts), chunk):
        done = await store.import_prompts(
            namespace, prompts[start : start + chunk], line if start == 0 else None
        )
        stored, skipped, visits = stored + done.stored, skipped + done.skipped, visits + done.visits
    if namespace_line is not None and set(META_FIELDS) <= set(namespace_line):
        await store.settle_import(namespace, {k: float(namespace_line[k]) for k in META_FIELDS})
    return {"prompts": stored, "visits": visits, "skipped": skipped}
