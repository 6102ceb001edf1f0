"""Verifiable rewards, pluggable by name. Each maps (completion text, reference answer) to a
reward in [0, 1]; success is reward >= the service's threshold. `prepare(name, answer)` parses
the reference once and returns the scorer of one group's completions.

- exact: the answer is the completion's first line (or a \\boxed{...}, or what follows
  "answer:" / "####"); numbers compare by value (3, 3.0 and 6/2 are equal), other text after
  trimming and case folding.
- math: `math-verify` on LaTeX / boxed answers.
- reasoning_gym: the `reasoning-gym` dataset's own scorer, on the <answer> tag when present.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from krl.common.errors import InvalidArgument

Verifier = Callable[[str, str], float]
Scorer = Callable[[str], float]
MAX_NUMBER_CHARS = 4096  # Decimal -> Fraction is quadratic in the digits; longer compares as text
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_MARKER = re.compile(r"(?:answer\s*[:=]|####)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")


def extract_answer(text: str) -> str:
    if m := _BOXED.findall(text):
        return m[-1].strip()
    if m := _MARKER.findall(text):
        return m[-1].strip().splitlines()[0].strip()
    return text.strip().split("\n", 1)[0].strip()


def _as_number(s: str) -> Fraction | None:
    s = s.replace(",", "").strip().rstrip(".")
    if len(s) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(s):
        return None
    try:
        if "/" in s:
            num, den = s.split("/")
            return Fraction(Decimal(num)) / Fraction(int(den)) if int(den) else None
        return Fraction(Decimal(s))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None


def _folded(s: str) -> str:
    return " ".join(s.split()).casefold()


def exact_for(answer: str) -> Scorer:
    want_number, want_text = _as_number(answer), _folded(answer)

    def score(completion: str) -> float:
        got = extract_answer(completion)
        if want_number is not None and (number := _as_number(got)) is not None:
            return float(number == want_number)
        return float(_folded(got) == want_text)

    return score


def exact(completion: str, answer: str) -> float:
    return exact_for(answer)(completion)


def math_for(answer: str) -> Scorer:
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only works on the main thread (the scoring
    # workers' case); the scoring pool's own timeout bounds it everywhere.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold_text = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    gold = parse(gold_text, parsing_timeout=timeout)

    def score(completion: str) -> float:
        pred = parse(completion, parsing_timeout=timeout)
        if not gold or not pred:
            return 0.0
        return float(verify(gold, pred, timeout_seconds=timeout))

    return score


def math(completion: str, answer: str) -> float:
    return math_for(answer)(completion)


def reasoning_gym_for(answer: str) -> Scorer:
    from reasoning_gym.utils import extract_answer as rg_extract

    from krl.tasks.reasoning_gym import dataset

    try:
        ref = json.loads(answer)
        size, index = int(ref["size"]), int(ref["index"])
        level = None if ref.get("level") is None else int(ref["level"])
        if not 0 <= index < size:
            raise IndexError(f"index {index} is outside [0, {size})")
        ds = dataset(str(ref["dataset"]), int(ref["seed"]), size, level)
        entry = ds[index]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as e:
        raise InvalidArgument(
            "reasoning_gym answers are entry references ({dataset, seed, size, index[, level]}): "
            f"{e}",
            field="answer",
        ) from None

    def score(completion: str) -> float:
        guess = rg_extract(completion)
        if guess is None:
            guess = completion.strip()
        return float(min(1.0, max(0.0, ds.score_answer(guess, entry))))

    return score


def reasoning_gym(completion: str, answer: str) -> float:
    return reasoning_gym_for(answer)(completion)


PREPARE: dict[str, Callable[[str], Scorer]] = {
    "exact": exact_for,
    "math": math_for,
    "reasoning_gym": reasoning_gym_for,
}
VERIFIERS: dict[str, Verifier] = {"exact": exact, "math": math, "reasoning_gym": reasoning_gym}


def get(name: str) -> Verifier:
    try:
        return VERIFIERS[name or "exact"]
    except KeyError:
        raise InvalidArgument(
            f"unknown verifier {name!r} (known: {', '.join(sorted(VERIFIERS))})", field="verifier"
        ) from None


def prepare(name: str, answer: str) -> Scorer:
    """The scorer of one group: the reference answer is parsed here, once. A reference nested
    too deeply for the parser is refused (InvalidArgument), never an internal error."""
    get(name)
    try:
        return PREPARE[name or "exact"](answer)
    except RecursionError:
        raise InvalidArgument("is nested too deeply to parse", field="answer") from None


INLINE_CHARS = 256  # exact on texts this short costs microseconds: no worker round trip


def cheap(name: str, answer: str, completions: list[str]) -> bool:
    """Whether a group is scored faster in place than in a worker (bounded, exact, short)."""
    return (
        (name or "exact") == "exact"
        and len(answer) <= INLINE_CHARS
        and all(len(c) <= INLINE_CHARS for c in completions)
    )


def score_group(name: str, answer: str, completions: list[str]) -> list[float]:
    """One reward per completion; a completion too deeply nested to parse scores 0."""
    score = prepare(name, answer)

    def safe(c: str) -> float:
        try:
            return float(score(c))
        except RecursionError:
            return 0.0

    return [safe(c) for c in completions]
