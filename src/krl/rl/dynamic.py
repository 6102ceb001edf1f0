"""DAPO-style dynamic sampling (Yu et al. 2025, arXiv 2503.14476), shared by the trainer and the
simulator: generate groups of the uniform n for batch after batch of prompts, drop the groups
whose rewards have no variance, and keep the first M informative groups (the rest of a round
that overfills the batch is dropped too, as in DAPO). At most `max_rounds` generation batches
feed one update; a batch that is still short after them trains on what it has."""

from __future__ import annotations

from collections.abc import Sequence


def keep_mask(informative: Sequence[bool], room: int) -> list[bool]:
    """For one round's groups in order, whether each is informative (krl_client.session's
    informative(rewards)): which to keep, given `room` slots left."""
    out = []
    for ok in informative:
        keep = bool(ok) and room > 0
        room -= keep
        out.append(keep)
    return out
