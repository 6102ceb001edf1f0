"""Tasks from JSONL files: one object per line with `id`, `prompt`, `answer` and optionally
`verifier` (default "exact"), `level` and `split` ("train", the default, or "heldout")."""

from __future__ import annotations

import json
from pathlib import Path

from krl.common.errors import InvalidArgument
from krl.tasks.base import Task, TaskSource

FIELDS = {"id", "prompt", "answer", "verifier", "level", "split"}


def _task(obj: object, where: str) -> tuple[str, Task]:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{where}: expected a JSON object")
    unknown = set(obj) - FIELDS
    if unknown:
        raise InvalidArgument(f"{where}: unknown fields {sorted(unknown)}")
    for key in ("id", "prompt", "answer"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise InvalidArgument(f"{where}: '{key}' must be a non-empty string")
    level = obj.get("level")
    if level is not None and not isinstance(level, int):
        raise InvalidArgument(f"{where}: 'level' must be an integer")
    split = obj.get("split", "train")
    if split not in ("train", "heldout"):
        raise InvalidArgument(f"{where}: 'split' must be 'train' or 'heldout'")
    verifier = obj.get("verifier", "exact")
    if not isinstance(verifier, str):
        raise InvalidArgument(f"{where}: 'verifier' must be a string")
    return split, Task(obj["id"], obj["prompt"], obj["answer"], verifier, level)


class JsonlSource(TaskSource):
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise InvalidArgument(f"no such file: {path}", field="tasks")
        train: list[Task] = []
        heldout: list[Task] = []
        seen: set[str] = set()
        with path.open() as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InvalidArgument(f"{where}: not valid JSON ({e.msg})") from None
                split, task = _task(obj, where)
                if task.id in seen:
                    raise InvalidArgument(f"{where}: duplicate id {task.id!r}")
                seen.add(task.id)
                (train if split == "train" else heldout).append(task)
        if not train:
            raise InvalidArgument(f"{path}: no training tasks", field="tasks")
        super().__init__(train, heldout)
