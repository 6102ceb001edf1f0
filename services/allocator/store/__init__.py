"""Per-prompt histories in Redis (standalone or Cluster), the one place that talks to it. Its
door is this module: HistoryStore and the types it takes and returns, what an export and an
import exchange, and the limits a caller checks against. The record's byte layout, the
transactions of a report and an import, and the cache of allocations stay inside."""

from krl.allocator.store.history_store import HistoryStore, Outcome
from krl.allocator.store.import_write import ImportPrompt, NamespaceLine
from krl.allocator.store.record import (
    HIST_BINS,
    RECENT_KEPT,
    PromptRecord,
    export_row,
    recent_of,
)
from krl.allocator.store.record_cache import META_FIELDS
from krl.allocator.store.record_update import check_record
from krl.allocator.store.report_write import OutcomeColumns, ReportResult

__all__ = [
    "HIST_BINS",
    "META_FIELDS",
    "RECENT_KEPT",
    "HistoryStore",
    "ImportPrompt",
    "NamespaceLine",
    "Outcome",
    "OutcomeColumns",
    "PromptRecord",
    "ReportResult",
    "check_record",
    "export_row",
    "recent_of",
]
