"""A procedural arithmetic task family with graded difficulty: deterministic for a seed, with ids
that name the seed, the level and the index, so they are stable across runs and machines.

    level 1   a+b        one-digit operands           "3+5="     -> "8"
    level 2   a+b        two-digit operands           "27+48="   -> "75"
    level 3   a-b        two-digit, may go negative   "31-58="   -> "-27"
    level 4   a*b        one digit times two digits   "7*36="    -> "252"
    level 5   a+b-c      two-digit operands           "52+17-38=" -> "31"
    level 6   a*b+c      two digits times one, plus   "23*4+17=" -> "109"

Held-out problems come from their own random stream and never repeat a training prompt (where a
level has fewer distinct problems than asked for, it has as many as exist)."""

from __future__ import annotations

import random

from krl.tasks.base import Task, TaskSource, leveled_splits

LEVELS = 6


def _operands(rng: random.Random, level: int) -> tuple[str, int]:
    d1 = lambda: rng.randint(0, 9)  # noqa: E731
    d2 = lambda: rng.randint(10, 99)  # noqa: E731
    if level == 1:
        a, b = d1(), d1()
        return f"{a}+{b}", a + b
    if level == 2:
        a, b = d2(), d2()
        return f"{a}+{b}", a + b
    if level == 3:
        a, b = d2(), d2()
        return f"{a}-{b}", a - b
    if level == 4:
        a, b = rng.randint(2, 9), d2()
        return f"{a}*{b}", a * b
    if level == 5:
        a, b, c = d2(), d2(), d2()
        return f"{a}+{b}-{c}", a + b - c
    if level == 6:
        a, b, c = d2(), rng.randint(2, 9), d2()
        return f"{a}*{b}+{c}", a * b + c
    raise ValueError(f"arithmetic level must be 1..{LEVELS}, got {level}")


def _generate(seed: int, split: str, level: int, count: int, avoid: set[str]) -> list[Task]:
    rng = random.Random(f"krl-arith:{seed}:{split}:{level}")
    out: list[Task] = []
    seen = set(avoid)
    tries = 0
    while len(out) < count and tries < count * 50:
        tries += 1
        expr, value = _operands(rng, level)
        prompt = f"{expr}="
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(
            Task(
                id=f"arith-s{seed}-{split}-L{level}-{len(out):05d}",
                prompt=prompt,
                answer=str(value),
                verifier="exact",
                level=level,
            )
        )
    return out


class ArithmeticSource(TaskSource):
    name = "arithmetic"

    def __init__(
        self,
        *,
        seed: int = 0,
        levels: tuple[int, ...] = tuple(range(1, LEVELS + 1)),
        train_per_level: int = 512,
        heldout_per_level: int = 64,
    ) -> None:
        train, heldout = leveled_splits(
            "arithmetic",
            _generate,
            seed=seed,
            levels=levels,
            max_level=LEVELS,
            train_per_level=train_per_level,
            heldout_per_level=heldout_per_level,
        )
        super().__init__(train, heldout)
        self.seed = seed
