"""`krl solve`: one allocation problem as JSON in, the allocation as JSON out (no Redis).

Input:  {"budget": B, "min_n": lo, "max_n": hi, "mode": "eb"|"paper"|"uniform",
         "fallback": true|false,
         "prompts": [{"id": "...", "successes": s, "trials": t}, ...]}
Output: {"allocation": {"<id>": n, ...}, "objective": <the mode's objective>, "solve_ms": ms}
        (+ "gap_bound" in mode eb with a non-concave objective). In mode eb the counts are the
evidence and the grid prior is fitted to the batch itself."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from krl.allocator.solve import grid, solver
from krl.allocator.solve.prior import RateMoments, fit_prior
from krl.common.errors import InvalidArgument, check

KNOWN_KEYS = {"budget", "min_n", "max_n", "mode", "fallback", "prompts"}
PROMPT_KEYS = {"id", "successes", "trials"}


def _int(obj: dict[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    if key not in obj:
        if default is not None:
            return default
        raise InvalidArgument("is required", field=where)
    v = obj[key]
    check(isinstance(v, int) and not isinstance(v, bool), where, f"must be an integer, got {v!r}")
    return v


def parse(doc: Any) -> tuple[list[str], solver.Problem, solver.Batch]:
    check(isinstance(doc, dict), "$", "must be a JSON object")
    unknown = set(doc) - KNOWN_KEYS
    check(not unknown, sorted(unknown)[0] if unknown else "", "unknown key")
    mode_s = doc.get("mode", "eb")
    check(
        mode_s in {m.value for m in solver.Mode},
        "mode",
        f"must be one of {', '.join(m.value for m in solver.Mode)}, got {mode_s!r}",
    )
    fallback = doc.get("fallback", True)
    check(isinstance(fallback, bool), "fallback", f"must be true or false, got {fallback!r}")
    problem = solver.Problem(
        budget=_int(doc, "budget", "budget"),
        min_n=_int(doc, "min_n", "min_n", default=1),
        max_n=_int(doc, "max_n", "max_n"),
        mode=solver.Mode(mode_s),
        fallback=fallback,
    )
    prompts = doc.get("prompts")
    check(isinstance(prompts, list), "prompts", "must be a list")
    ids: list[str] = []
    s = np.zeros(len(prompts))
    t = np.zeros(len(prompts))
    seen: set[str] = set()
    for i, p in enumerate(prompts):
        where = f"prompts[{i}]"
        check(isinstance(p, dict), where, "must be an object")
        extra = set(p) - PROMPT_KEYS
        check(not extra, f"{where}.{sorted(extra)[0]}" if extra else where, "unknown key")
        pid = p.get("id")
        check(isinstance(pid, str) and pid != "", f"{where}.id", "must be a non-empty string")
        check(pid not in seen, f"{where}.id", f"duplicate prompt id {pid!r}")
        seen.add(pid)
        ids.append(pid)
        s[i] = _int(p, "successes", f"{where}.successes", default=0)
        t[i] = _int(p, "trials", f"{where}.trials", default=0)
        check(s[i] >= 0, f"{where}.successes", f"must be >= 0, got {int(s[i])}")
        check(t[i] >= 0, f"{where}.trials", f"must be >= 0, got {int(t[i])}")
        check(
            s[i] <= t[i],
            f"{where}.successes",
            f"{int(s[i])} successes is more than {int(t[i])} trials",
        )
    a0, b0 = fit_prior(RateMoments.from_counts(s, t))
    batch = solver.Batch(s, t, a0 + s, b0 + (t - s))
    if problem.mode is solver.Mode.EB:
        batch.weights = grid.posterior(grid.fit_prior(s, t), s, t - s)
    return ids, problem, batch


def run(doc: Any) -> dict[str, Any]:
    ids, problem, batch = parse(doc)
    t0 = time.perf_counter()
    sol = solver.solve(problem, batch)
    ms = (time.perf_counter() - t0) * 1e3
    out: dict[str, Any] = {
        "allocation": {pid: int(n) for pid, n in zip(ids, sol.n, strict=True)},
        "objective": sol.objective,
        "solve_ms": ms,
    }
    if sol.gap_bound > 0:
        out["gap_bound"] = sol.gap_bound
    return out
