"""Pick a task source by spec: `reverse`, `arithmetic`, `jsonl:PATH` or `reasoning_gym:DATASET`.
The spec is parsed in one place (parse_task), by the trainer's settings and by load_source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from krl.common.errors import InvalidArgument
from krl.tasks.base import TaskSource

TaskKind = Literal["reverse", "arithmetic", "jsonl", "reasoning_gym"]
PROCEDURAL = frozenset({"reverse", "arithmetic"})
"""Kinds generated in code (no argument); the others name a file or a dataset."""
USAGE = "use reverse, arithmetic, jsonl:PATH or reasoning_gym:DATASET"


@dataclass(frozen=True)
class TaskSpec:
    kind: TaskKind
    arg: str = ""


def parse_task(spec: str) -> TaskSpec:
    """A task spec -> TaskSpec; InvalidArgument (field `task`) for anything else."""
    kind, _, arg = spec.partition(":")
    if kind not in get_args(TaskKind) or (kind in PROCEDURAL) == bool(arg):
        raise InvalidArgument(f"unknown task {spec!r}: {USAGE}", field="task")
    return TaskSpec(kind, arg)  # type: ignore[arg-type]


def load_source(
    spec: str, *, seed: int = 0, train_per_level: int = 512, heldout_per_level: int = 64
) -> TaskSource:
    task = parse_task(spec)
    if task.kind == "arithmetic":
        from krl.tasks.arithmetic import ArithmeticSource

        return ArithmeticSource(
            seed=seed, train_per_level=train_per_level, heldout_per_level=heldout_per_level
        )
    if task.kind == "reverse":
        from krl.tasks.reverse import ReverseSource

        return ReverseSource(
            seed=seed, train_per_level=train_per_level, heldout_per_level=heldout_per_level
        )
    if task.kind == "jsonl":
        from krl.tasks.jsonl import JsonlSource

        return JsonlSource(Path(task.arg))
    from krl.tasks.reasoning_gym import ReasoningGymSource

    return ReasoningGymSource(
        task.arg, seed=seed, train_size=train_per_level, heldout_size=heldout_per_level
    )
