"""The data order: epoch after epoch, each a seeded permutation of the training prompts cut into
batches of M (the last partial batch of an epoch is dropped, so a batch never repeats a prompt).
Batch s is a pure function of (seed, s): resuming at step s gives exactly the batches an
uninterrupted run would have seen."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class EpochSampler:
    def __init__(self, ids: Sequence[str], batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(ids) < batch_size:
            raise ValueError(
                f"the task has {len(ids)} training prompts, fewer than a batch of {batch_size}"
            )
        self.ids = list(ids)
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = len(self.ids) // batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached = (epoch, rng.permutation(len(self.ids)))
        return self._cached[1]

    def cursor(self, step: int) -> tuple[int, int]:
        """(epoch, offset in the epoch's permutation) where batch `step` (0-based) starts."""
        epoch, b = divmod(step, self.per_epoch)
        return epoch, b * self.batch_size

    def batch(self, step: int) -> list[str]:
        epoch, start = self.cursor(step)
        idx = self._perm(epoch)[start : start + self.batch_size]
        return [self.ids[int(i)] for i in idx]
