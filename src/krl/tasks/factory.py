"""Pick a task source by spec: `reverse`, `arithmetic`, `jsonl:PATH` or `reasoning_gym:DATASET`."""

from __future__ import annotations

from pathlib import Path

from krl.common.errors import InvalidArgument
from krl.tasks.base import TaskSource


def load_source(
    spec: str, *, seed: int = 0, train_per_level: int = 512, heldout_per_level: int = 64
) -> TaskSource:
    kind, _, arg = spec.partition(":")
    if kind == "arithmetic" and not arg:
        from krl.tasks.arithmetic import ArithmeticSource

        return ArithmeticSource(
            seed=seed, train_per_level=train_per_level, heldout_per_level=heldout_per_level
        )
    if kind == "reverse" and not arg:
        from krl.tasks.reverse import ReverseSource

        return ReverseSource(
            seed=seed, train_per_level=train_per_level, heldout_per_level=heldout_per_level
        )
    if kind == "jsonl" and arg:
        from krl.tasks.jsonl import JsonlSource

        return JsonlSource(Path(arg))
    if kind == "reasoning_gym" and arg:
        from krl.tasks.reasoning_gym import ReasoningGymSource

        return ReasoningGymSource(arg, seed=seed)
    raise InvalidArgument(
        f"unknown task source {spec!r}: use reverse, arithmetic, jsonl:PATH or reasoning_gym:DATASET",
        field="tasks",
    )
