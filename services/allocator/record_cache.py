"""The prompt records this process last read or wrote, per namespace, kept while the namespace's
report version is unchanged, so an Allocate or a report reads from Redis only the records it
has not seen (a 1,024-prompt batch is 221 KB of records).

Every report sets the namespace's version (krl:{ns}:v) to a fresh random token in the MULTI that
writes its records (report_write.py), and nothing else writes records. So records read under
version V are current for as long as the version is still V: a reader gets the version in the
same MULTI as the records it still needs and uses the cached ones only when it matches. A
report of another allocator process (or a Redis that lost writes, whose version then differs
or is gone) changes the version and the namespace's cache is dropped. Random tokens, not a
counter: a Redis restored from an older snapshot could count up to a cached number again over
other records."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from krl.allocator.history import RECORD_BYTES

MISSING = b""
"""Not cached (a cached prompt without a record is None)."""
ENTRY_BYTES = RECORD_BYTES + 160
"""What one cached prompt costs in memory, about: its record, its id and the dict entry."""


@dataclass
class Cached:
    present: bool
    """The namespace is cached (at `version`)."""
    version: bytes | None
    raws: list[bytes | None]
    """Per prompt asked: its cached record, None (it has none), MISSING (not cached)."""
    need: list[int]
    """Positions of the MISSING ones."""

    def fill(self, version: bytes | None, fetched: Sequence[bytes | None]) -> bool:
        """Put the records read at `version` in place; False when the cache is of another
        version (then nothing it held may be used)."""
        if self.present and version != self.version and len(self.need) < len(self.raws):
            return False
        for i, r in zip(self.need, fetched, strict=True):
            self.raws[i] = r
        return True


class _Namespace:
    __slots__ = ("records", "version")

    def __init__(self, version: bytes | None) -> None:
        self.version = version
        self.records: dict[str, bytes | None] = {}


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
        """What is cached of these prompts, and which to read."""
        c = self._ns.get(ns)
        if c is None:
            return Cached(False, None, [MISSING] * len(ids), list(range(len(ids))))
        self._ns.move_to_end(ns)
        recs = c.records
        raws = [recs.get(pid, MISSING) for pid in ids]
        need = [i for i, r in enumerate(raws) if r is MISSING]
        return Cached(True, c.version, raws, need)

    def settle(
        self,
        ns: str,
        version: bytes | None,
        cached: Cached,
        ids: Sequence[str],
        fetched: Sequence[bytes | None],
    ) -> bool:
        """Put the records read at `version` (those of cached.need) in place and keep them;
        False, and the namespace dropped, when the held ones were of another version."""
        if not cached.fill(version, fetched):
            self._drop(ns)
            return False
        self.hits += len(cached.raws) - len(cached.need)
        self.misses += len(cached.need)
        self.seen(ns, version, [ids[i] for i in cached.need], fetched)
        return True

    def seen(
        self, ns: str, version: bytes | None, ids: Sequence[str], raws: Sequence[bytes | None]
    ) -> None:
        """Records read at `version` (None where the prompt has none)."""
        if not self.max_entries:
            return
        c = self._ns.get(ns)
        if c is None or c.version != version:
            self._drop(ns)
            c = self._ns[ns] = _Namespace(version)
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
    ) -> None:
        """A report committed: what it read at `read_version` stays current but for the records
        it wrote, and the namespace is now at `version`."""
        c = self._ns.get(ns)
        if c is not None and c.version != read_version:
            self._drop(ns)
        elif c is not None:
            c.version = version
        self.seen(ns, version, ids, raws)

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
    still exists (its TTL), not its 1,024-entry map."""

    def __init__(self, kept: int = 64) -> None:
        self.kept = kept
        self._items: OrderedDict[str, tuple[int, dict[str, int], int]] = OrderedDict()

    def put(self, key: str, step: int, allotted: dict[str, int], opened: int) -> None:
        self._items[key] = (step, allotted, opened)
        while len(self._items) > self.kept:
            self._items.popitem(last=False)

    def get(self, key: str) -> tuple[int, dict[str, int], int] | None:
        return self._items.get(key)
