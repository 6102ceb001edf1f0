"""What this allocator process last read or wrote of a namespace (its prompt records, its meta
aggregates and last-visit counts), kept while the namespace's report version is unchanged, so
an Allocate or a report reads from Redis only what it has not seen (a 1,024-prompt batch is
221 KB of records).

Every report sets the namespace's version (krl:{ns}:v) to a fresh random token in the MULTI that
writes its records (report_write.py), and nothing else writes records, those aggregates or the
counts. So what was read under version V is current for as long as the version is still V: a
reader gets the version in the same round trip as what it still needs and uses the held state
only when it matches, else drops it and reads all. A report of another allocator process (or a
Redis that lost writes, whose version then differs or is gone) changes the version. Random
tokens, not a counter: a Redis restored from an older snapshot could count up to a held number
again over other records."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from krl.allocator.store.record import HIST_BINS, RECORD_BYTES


def version_of(token: bytes | None) -> bytes:
    """What held state is checked against: the namespace's report token (b"-" before its first
    report or import)."""
    return token or b"-"


MISSING = b""
"""Not held (a held prompt without a record is None)."""
ENTRY_BYTES = RECORD_BYTES + 160
"""What one held prompt costs in memory, about: its record, its id and the dict entry."""
META_FIELDS = (
    "sum_p",
    "sum_p2",
    "sum_inv_t",
    "tok_w",
    "tok_sum",
    "prompts",
    "solved",
    "unsolved",
    *(f"h{i}" for i in range(HIST_BINS)),
    "rate_s",
    "rate_w",
)
"""The namespace meta fields only reports write (allocations count themselves elsewhere)."""


@dataclass
class NamespaceState:
    """The namespace's report-written aggregates at one version."""

    meta: dict[str, float]
    """META_FIELDS -> value (0.0 where absent)."""
    last_visits: dict[bytes, int]
    """b'k:n' -> prompts whose latest visit had k successes of n trials."""

    @classmethod
    def from_replies(cls, meta: Sequence, lv) -> NamespaceState:
        """From HMGET of META_FIELDS and HGETALL of the counts (a map, or a flat list)."""
        pairs = lv.items() if isinstance(lv, dict) else zip(lv[0::2], lv[1::2], strict=True)
        return cls(
            dict(zip(META_FIELDS, (float(x) if x is not None else 0.0 for x in meta), strict=True)),
            {k: int(c) for k, c in pairs},
        )


@dataclass
class Cached:
    present: bool
    """The namespace is held (at `version`)."""
    version: bytes | None
    raws: list[bytes | None]
    """Per prompt asked: its held record, None (it has none), MISSING (not held)."""
    need: list[int]
    """Positions of the MISSING ones."""
    state: NamespaceState | None
    """The aggregates held at `version`, or None (read them)."""

    def fill(self, version: bytes | None, fetched: Sequence[bytes | None]) -> bool:
        """Put the records read at `version` in place; False when what is held is of another
        version (then none of it may be used)."""
        if self.present and version != self.version:
            return False
        for i, r in zip(self.need, fetched, strict=True):
            self.raws[i] = r
        return True


class _Namespace:
    __slots__ = ("records", "state", "version")

    def __init__(self, version: bytes | None) -> None:
        self.version = version
        self.records: dict[str, bytes | None] = {}
        self.state: NamespaceState | None = None


class RecordCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_entries = max(int(max_bytes) // ENTRY_BYTES, 0)
        self._ns: OrderedDict[str, _Namespace] = OrderedDict()
        self._entries = 0
        self.hits = 0
        self.misses = 0

    @property
    def entries(self) -> int:
        return self._entries

    def lookup(self, ns: str, ids: Sequence[str]) -> Cached:
        """What is held of these prompts and of the namespace, and which records to read."""
        c = self._ns.get(ns)
        if c is None:
            return Cached(False, None, [MISSING] * len(ids), list(range(len(ids))), None)
        self._ns.move_to_end(ns)
        recs = c.records
        raws = [recs.get(pid, MISSING) for pid in ids]
        need = [i for i, r in enumerate(raws) if r is MISSING]
        return Cached(True, c.version, raws, need, c.state)

    def settle(
        self,
        ns: str,
        version: bytes | None,
        cached: Cached,
        ids: Sequence[str],
        fetched: Sequence[bytes | None],
        state: NamespaceState | None = None,
    ) -> bool:
        """Put the records read at `version` (those of cached.need) in place and keep them, with
        the aggregates when they were read too; False, and the namespace dropped, when what was
        held is of another version."""
        if not cached.fill(version, fetched):
            self._drop(ns)
            return False
        self.hits += len(cached.raws) - len(cached.need)
        self.misses += len(cached.need)
        if state is not None:
            cached.state = state
        self.seen(ns, version, [ids[i] for i in cached.need], fetched, state)
        return True

    def seen(
        self,
        ns: str,
        version: bytes | None,
        ids: Sequence[str],
        raws: Sequence[bytes | None],
        state: NamespaceState | None = None,
    ) -> None:
        """Records (None where the prompt has none) and, if given, aggregates read at
        `version`."""
        if not self.max_entries:
            return
        c = self._ns.get(ns)
        if c is None or c.version != version:
            self._drop(ns)
            c = self._ns[ns] = _Namespace(version)
        if state is not None:
            c.state = state
        before = len(c.records)
        c.records.update(zip(ids, raws, strict=True))
        self._entries += len(c.records) - before
        self._ns.move_to_end(ns)
        self._evict()

    def wrote(
        self,
        ns: str,
        read_version: bytes | None,
        version: bytes,
        ids: Sequence[str],
        raws: Sequence[bytes],
        state: NamespaceState,
    ) -> None:
        """A report committed at `version`, over what it read at `read_version`: the records it
        wrote and the namespace's new aggregates; the rest held stays current."""
        c = self._ns.get(ns)
        if c is not None and c.version != read_version:
            self._drop(ns)
        elif c is not None:
            c.version = version
        self.seen(ns, version, ids, raws, state)

    def _drop(self, ns: str) -> None:
        c = self._ns.pop(ns, None)
        if c is not None:
            self._entries -= len(c.records)

    def _evict(self) -> None:
        while self._entries > self.max_entries and len(self._ns) > 1:
            self._drop(next(iter(self._ns)))
        if self._entries > self.max_entries:  # one namespace over the whole budget
            (ns,) = self._ns
            self._drop(ns)


class AllocationCache:
    """The last allocations this process saved: (step, prompt id -> n, prompts with n > 0). An
    allocation never changes once saved, so a report of it needs from Redis only whether it
    still exists (its TTL), not its 1,024-entry map. Holds at most `max_prompts` prompts over
    all allocations (and always the newest, unless max_prompts is 0)."""

    def __init__(self, max_prompts: int) -> None:
        self.max_prompts = max(int(max_prompts), 0)
        self._items: OrderedDict[str, tuple[int, dict[str, int], int]] = OrderedDict()
        self._prompts = 0

    def put(self, key: str, step: int, allotted: dict[str, int], opened: int) -> None:
        if not self.max_prompts:
            return
        self._items[key] = (step, allotted, opened)
        self._prompts += len(allotted)
        while self._prompts > self.max_prompts and len(self._items) > 1:
            _, (_, old, _) = self._items.popitem(last=False)
            self._prompts -= len(old)

    def get(self, key: str) -> tuple[int, dict[str, int], int] | None:
        return self._items.get(key)
