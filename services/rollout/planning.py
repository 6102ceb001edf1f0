"""Spread a batch over engine replicas so that each gets a near-equal share of expected tokens.

A rollout of prompt i costs c_i = prompt tokens + max_new_tokens (the most it can take). Prompts
go out largest total first; each goes to the least-loaded replica, split when it would push that
replica past the even share, so a prompt with a large n is spread over several replicas. Every
replica ends at most one rollout's cost above the even share."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from krl.rollout.engines.base import GenItem


def split(
    prompts: Sequence[tuple[tuple[int, ...], int]], replicas: int, max_new_tokens: int
) -> list[list[GenItem]]:
    """prompts[i] = (token ids, n). Returns one item list per replica; item keys are
    (i, part) and the parts of prompt i add up to its n exactly."""
    parts: list[list[GenItem]] = [[] for _ in range(replicas)]
    cost = [len(ids) + max_new_tokens for ids, _ in prompts]
    total = sum(c * n for c, (_, n) in zip(cost, prompts, strict=True))
    share = total / replicas
    heap = [(0.0, r) for r in range(replicas)]
    order = sorted(
        (i for i, (_, n) in enumerate(prompts) if n > 0), key=lambda i: -cost[i] * prompts[i][1]
    )
    for i in order:
        ids, left = prompts[i]
        part = 0
        while left > 0:
            load, r = heapq.heappop(heap)
            room = max(1, math.ceil((share - load) / cost[i]))
            take = left if replicas == 1 else min(left, room)
            parts[r].append(GenItem((i, part), tuple(ids), take))
            heapq.heappush(heap, (load + take * cost[i], r))
            left -= take
            part += 1
    return parts
