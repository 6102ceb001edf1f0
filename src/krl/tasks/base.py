"""The task record and the source interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from krl.common.errors import NotFound


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    answer: str
    verifier: str = "exact"
    level: int | None = None
    """Difficulty level, where the source has one (held-out accuracy is reported per level)."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


class TaskSource:
    """A fixed training set and a disjoint held-out set, both addressable by id."""

    name: str = "tasks"

    def __init__(self, train: list[Task], heldout: list[Task]) -> None:
        self.train = train
        self.heldout = heldout
        self._by_id = {t.id: t for t in (*train, *heldout)}
        if len(self._by_id) != len(train) + len(heldout):
            raise ValueError(f"{self.name}: task ids are not unique")

    def get(self, task_id: str) -> Task:
        try:
            return self._by_id[task_id]
        except KeyError:
            raise NotFound(f"no task {task_id!r} in {self.name}", field="prompt_id") from None

    def levels(self) -> list[int]:
        return sorted({t.level for t in self.heldout if t.level is not None})
