"""The task record and the source interface."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


Generator = Callable[[int, str, int, int, set[str]], list[Task]]
"""(seed, split, level, count, prompts to avoid) -> tasks of one level and split."""


def leveled_splits(
    name: str,
    generate: Generator,
    *,
    seed: int,
    levels: Iterable[int],
    max_level: int,
    train_per_level: int,
    heldout_per_level: int,
) -> tuple[list[Task], list[Task]]:
    """Training and held-out tasks of a procedural family, level by level; a level's held-out
    tasks never repeat one of its training prompts."""
    levels = tuple(levels)
    for lv in levels:
        if not 1 <= lv <= max_level:
            raise ValueError(f"{name} level must be 1..{max_level}, got {lv}")
    train: list[Task] = []
    heldout: list[Task] = []
    for lv in levels:
        tr = generate(seed, "train", lv, train_per_level, set())
        train += tr
        heldout += generate(seed, "eval", lv, heldout_per_level, {t.prompt for t in tr})
    return train, heldout
