"""Task sources: what the trainer draws prompts from and what the rollout service's verifiers
score against. Every task has a stable id, a prompt, a reference answer and a verifier name."""

from krl.tasks.base import Task, TaskSource
from krl.tasks.factory import load_source

__all__ = ["Task", "TaskSource", "load_source"]
