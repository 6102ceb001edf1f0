"""The run folder's logs: metrics.jsonl (one row per step, kind "step", and per held-out
evaluation, kind "eval") and events.jsonl (warm-up progress, checkpoints, pauses, the end).
Rows are flushed as written so `krl up` and plots can follow a live run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from krl.rl.rows import Row


def json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    return v


def read_rows(path: Path) -> list[Row]:
    """The rows of a metrics.jsonl (krl.rl.rows), up to a line still being written."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
    return rows


class Tail:
    """Follow a JSONL file that another process appends to: each call returns the complete
    lines added since the last one (a line still being written waits for the next call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def new_rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            if f.seek(0, 2) < self._offset:  # replaced by a shorter file (a resume truncated it)
                self._offset = 0
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]


class RunLog:
    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.events_path = run_dir / "events.jsonl"

    def write(self, row: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(json_safe(row)) + "\n")

    def event(self, name: str, data: dict | None = None) -> None:
        with self.events_path.open("a") as f:
            f.write(json.dumps({"event": name, "time": time.time(), **(data or {})}) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop rows of steps after `step` (a resumed run redoes them); returns rows dropped."""
        rows = read_rows(self.metrics_path)
        keep = [r for r in rows if r.get("step", 0) <= step]
        if len(keep) != len(rows):
            tmp = self.metrics_path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
            tmp.replace(self.metrics_path)
        self.event("resumed", {"step": step, "dropped_rows": len(rows) - len(keep)})
        return len(rows) - len(keep)
