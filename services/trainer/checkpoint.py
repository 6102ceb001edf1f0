"""Checkpoints: the policy (an HF folder, loadable by the rollout service as is), the optimiser,
the step, the policy version, every RNG and the data cursor. Written to a temporary folder and
renamed, so a crash mid-save never leaves a half checkpoint; `latest` names the newest."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class TrainerState:
    step: int
    """Steps completed (the next step to run, 0-based)."""
    policy_version: int
    cursor: tuple[int, int]
    seed: int
    namespace: str
    batches: int = -1
    """Batches of M prompts drawn so far (dapo draws several per step; -1: same as step)."""
    rollouts: int = 0
    """Rollouts generated so far."""

    def __post_init__(self) -> None:
        if self.batches < 0:
            self.batches = self.step

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "policy_version": self.policy_version,
            "cursor": list(self.cursor),
            "seed": self.seed,
            "namespace": self.namespace,
            "batches": self.batches,
            "rollouts": self.rollouts,
        }


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def save(root: Path, model, tokenizer, optimizer, state: TrainerState, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state()}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps(state.as_dict(), indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / "latest.tmp").write_text(final.name)
    (root / "latest.tmp").replace(root / "latest")
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    f = root / "latest"
    if not f.is_file():
        return None
    p = root / f.read_text().strip()
    return p if (p / "state.json").is_file() else None


def load_state(path: Path) -> TrainerState:
    d = json.loads((path / "state.json").read_text())
    return TrainerState(
        d["step"],
        d["policy_version"],
        tuple(d["cursor"]),
        d["seed"],
        d["namespace"],
        d.get("batches", -1),
        d.get("rollouts", 0),
    )


def load_trainer_parts(path: Path, optimizer) -> None:
    blob = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    set_rng_state(blob["rng"])
