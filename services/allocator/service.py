"""The allocator's use cases (protocol-free): validate, read histories, solve, record.

The gRPC and HTTP adapters convert their messages to these dataclasses at the edge and map
the project's exceptions to status codes; nothing here touches protobuf or HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from krl.allocator.metrics import AllocatorMetrics
from krl.allocator.settings import AllocatorSettings
from krl.allocator.solve import grid, objectives, solver
from krl.allocator.solve.posterior import BatchHistory, eb_posterior
from krl.allocator.solve.prior import PriorConfig, RateMoments, fit_prior
from krl.allocator.solve.solver import Mode
from krl.allocator.store import HIST_BINS, HistoryStore, Outcome, OutcomeColumns, ReportResult
from krl.allocator.usecase import (
    ALLOCATION_ID_RE,
    MAX_STEP,
    AllocateInput,
    AllocateResult,
    NamespaceSummary,
    PromptView,
    check_namespace,
)
from krl.common.errors import InvalidArgument, KrlError, Overloaded, Unavailable, check
from krl_client.messages import OBJECTIVE_FOR_LOSS

SOLVE_IN_THREAD_ABOVE = 4096  # prompts; smaller solves take about a millisecond
SHED_RETRY_S = 0.05  # the hint sent with a shed Allocate
GRID_PRIORS_KEPT = 1024  # namespaces whose fitted grid prior is kept in memory


class Allocator:
    def __init__(self, store: HistoryStore, settings: AllocatorSettings, metrics: AllocatorMetrics):
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.prior_cfg = PriorConfig(settings.prior_strength_min, settings.prior_strength_max)
        self._grid_priors: OrderedDict[str, tuple[bytes, np.ndarray]] = OrderedDict()
        self._inflight = 0  # Allocate calls being served (one event loop: no lock needed)

    def _check_prompt_ids(self, ids: Sequence[str], field_name: str) -> None:
        """Size limit, then non-empty, unique, UTF-8 encodable and short ids; the loops run only
        on a failure."""
        limit = self.settings.max_batch_prompts
        if len(ids) > limit:
            raise InvalidArgument(
                f"{len(ids)} prompts is over the limit of {limit} (max_batch_prompts)",
                field=field_name,
            )
        if not ids:
            return
        unique = set(ids)
        if len(unique) != len(ids) or "" in unique:
            seen: set[str] = set()
            for i, pid in enumerate(ids):
                check(bool(pid), f"{field_name}[{i}]", "is empty")
                check(pid not in seen, f"{field_name}[{i}]", f"duplicate prompt id {pid!r}")
                seen.add(pid)
        try:
            "".join(ids).encode()
        except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"; Redis keys cannot)
            for i, pid in enumerate(ids):
                try:
                    pid.encode()
                except UnicodeEncodeError as e:
                    raise InvalidArgument(
                        f"is not valid UTF-8 text ({e.reason} at character {e.start})",
                        field=f"{field_name}[{i}]",
                    ) from None
        max_bytes = self.settings.max_prompt_id_bytes
        if max(map(len, ids)) * 4 > max_bytes:  # a UTF-8 character takes at most 4 bytes
            for i, pid in enumerate(ids):
                size = len(pid.encode())
                check(
                    size <= max_bytes,
                    f"{field_name}[{i}]",
                    f"is {size} bytes, over the limit of {max_bytes}",
                )

    def prior(self, moments: RateMoments) -> tuple[float, float]:
        return fit_prior(moments, self.prior_cfg)

    def _visit_half_life(self, asked: float | None) -> float:
        if asked is None:
            return self.settings.visit_half_life
        check(
            math.isfinite(asked) and asked >= 0,
            "visit_half_life",
            f"must be a finite number >= 0 (0: never decay), got {asked}",
        )
        return asked

    def _eb_posterior(self, namespace: str, hist: BatchHistory, step: int, half_life: float):
        prior = self.grid_prior(namespace, hist.last_visit_pairs)
        return eb_posterior(
            prior, hist.visits, hist.rate_logit, step, half_life, self.settings.half_life_steps
        )

    def grid_prior(self, namespace: str, pairs) -> np.ndarray:
        """The namespace's grid prior, fitted to its last-visit counts (grid.fit_prior). The fit
        is kept per namespace and redone only when the counts changed, from the flat prior every
        time: the same counts give the same prior in every process, whatever came before (two
        allocator replicas, a restarted one and an imported namespace allocate alike; a warm
        start saved ~1.5 ms and did not)."""
        k, n, c = pairs if pairs is not None else (np.zeros(0),) * 3
        key = hashlib.blake2b(
            np.concatenate([k, n, c]).astype(np.int64).tobytes(), digest_size=16
        ).digest()
        cached = self._grid_priors.get(namespace)
        if cached is not None and cached[0] == key:
            self._grid_priors.move_to_end(namespace)
            return cached[1]
        prior = grid.fit_prior(k, n, c)
        self._grid_priors[namespace] = (key, prior)
        self._grid_priors.move_to_end(namespace)
        while len(self._grid_priors) > GRID_PRIORS_KEPT:
            self._grid_priors.popitem(last=False)
        return prior

    async def allocate(self, req: AllocateInput) -> AllocateResult:
        limit = self.settings.max_inflight_allocations
        if self._inflight >= limit:
            self.metrics.shed.inc()
            raise Overloaded(
                f"{self._inflight} allocations in flight (max_inflight_allocations {limit}); "
                "retry shortly",
                retry_after_s=SHED_RETRY_S,
            )
        self._inflight += 1
        try:
            return await self._allocate(req)
        finally:
            self._inflight -= 1

    def _objective(self, req: AllocateInput) -> str:
        """The request's objective, else the one made for its loss aggregation, else the
        server's."""
        if req.loss_agg:
            check(
                req.loss_agg in OBJECTIVE_FOR_LOSS,
                "loss_agg",
                f"{req.loss_agg!r} is not one of {', '.join(OBJECTIVE_FOR_LOSS)}",
            )
        if req.objective:
            return req.objective
        if req.loss_agg:
            return OBJECTIVE_FOR_LOSS[req.loss_agg]
        return self.settings.objective

    async def _allocate(self, req: AllocateInput) -> AllocateResult:
        started = time.perf_counter()
        check_namespace(req.namespace)
        check(0 <= req.step <= MAX_STEP, "step", f"must be in [0, {MAX_STEP}], got {req.step}")
        self._check_prompt_ids(req.prompt_ids, "prompt_ids")
        limit = self.settings.max_n_limit
        check(
            req.max_n <= limit,
            "max_n",
            f"{req.max_n} is over the limit of {limit} rollouts per prompt (max_n_limit)",
        )
        cells = len(req.prompt_ids) * max(req.max_n, 0)
        check(
            cells <= self.settings.max_solver_cells,
            "max_n",
            f"{len(req.prompt_ids)} prompts x max_n {req.max_n} = {cells} is over the limit of "
            f"{self.settings.max_solver_cells} (max_solver_cells); ask for a smaller max_n or "
            "batch",
        )
        problem = solver.Problem(
            req.budget,
            req.min_n,
            req.max_n,
            req.mode,
            req.fallback,
            objective=self._objective(req),
        )
        solver.validate(problem, len(req.prompt_ids))
        half_life = self._visit_half_life(req.visit_half_life)
        hist = await self.store.read_batch(req.namespace, req.prompt_ids, req.step)
        batch = self._solver_batch(hist)
        if req.mode is Mode.EB:
            batch.weights = self._eb_posterior(req.namespace, hist, req.step, half_life)
        t0 = time.perf_counter()
        cold = req.mode is Mode.EB and not objectives.table_ready(problem.objective, req.max_n)
        if len(req.prompt_ids) > SOLVE_IN_THREAD_ABOVE or cold:  # cold: seconds for its table
            sol = await asyncio.to_thread(solver.solve, problem, batch)
        else:
            sol = solver.solve(problem, batch)
        solve_s = time.perf_counter() - t0
        alloc_id = uuid.uuid4().hex
        n = sol.n.tolist()
        meta = {
            "step": req.step,
            "mode": req.mode.value,
            "budget": req.budget,
            "min_n": req.min_n,
            "max_n": req.max_n,
            "fallback": req.fallback,
            "objective": sol.objective,
            "objective_name": problem.objective if req.mode is Mode.EB else req.mode.value,
            "solve_ms": solve_s * 1e3,
            "budget_used": sol.budget_used,
            "gap_bound": sol.gap_bound,
            "prompts": len(n),
            "created_unix": time.time(),
        }
        await self.store.save_allocation(
            req.namespace, alloc_id, req.step, meta, dict(zip(req.prompt_ids, n, strict=True))
        )
        mode = req.mode.value
        self.metrics.solve_seconds.labels(mode).observe(solve_s)
        self.metrics.allocations.labels(mode).inc()
        self.metrics.prompts_allocated.inc(len(n))
        self.metrics.rollouts_per_prompt.observe_many(mode, sol.n)
        self.metrics.allocate_seconds.labels(mode).observe(time.perf_counter() - started)
        return AllocateResult(
            alloc_id,
            req.prompt_ids,
            n,
            sol.p.tolist(),
            sol.value.tolist(),
            sol.objective,
            solve_s * 1e3,
            req.mode,
            sol.budget_used,
            sol.gap_bound,
            meta,
        )

    def _solver_batch(self, hist: BatchHistory) -> solver.Batch:
        a0, b0 = self.prior(hist.moments)
        return solver.Batch(
            last_successes=hist.last_successes,
            last_trials=hist.last_trials,
            alpha=a0 + hist.evidence_successes,
            beta=b0 + hist.evidence_failures,
        )

    async def report(
        self, namespace: str, allocation_id: str, outcomes: Sequence[Outcome] | OutcomeColumns
    ) -> ReportResult:
        started = time.perf_counter()
        cols = OutcomeColumns.of(outcomes)
        try:
            check_namespace(namespace)
            check(
                bool(ALLOCATION_ID_RE.fullmatch(allocation_id)),
                "allocation_id",
                f"{allocation_id!r} is not an allocation id (32 hex digits)",
            )
            check(len(cols) > 0, "outcomes", "is empty")
            self._check_prompt_ids(cols.prompt_ids, "outcomes.prompt_id")
            succ, trials, tokens = cols.successes, cols.trials, cols.total_tokens
            _check_counts(succ, trials, tokens, self.settings.max_tokens_per_rollout)
            result = await self.store.report(namespace, allocation_id, cols)
        except KrlError:
            self.metrics.reports.labels("rejected").inc(len(cols))
            raise
        self.metrics.reports.labels("accepted").inc(result.accepted)
        self.metrics.reports.labels("duplicate").inc(len(result.duplicates))
        counted = trials >= 2
        if result.duplicates:
            dup = set(result.duplicates)
            counted &= np.array([pid not in dup for pid in cols.prompt_ids])
        self.metrics.zero_variance_groups.labels("all_correct").inc(
            int((counted & (succ == trials)).sum())
        )
        self.metrics.zero_variance_groups.labels("all_wrong").inc(
            int((counted & (succ == 0)).sum())
        )
        self.metrics.report_seconds.observe(time.perf_counter() - started)
        return result

    async def prompt_views(
        self, namespace: str, prompt_ids: Sequence[str], step: int = 0
    ) -> list[PromptView]:
        check_namespace(namespace)
        check(0 <= step <= MAX_STEP, "step", f"must be in [0, {MAX_STEP}], got {step}")
        self._check_prompt_ids(prompt_ids, "prompt_ids")
        check(len(prompt_ids) > 0, "prompt_ids", "is empty")
        meta = await self.store.namespace_meta(namespace)
        a0, b0 = self.prior(_moments(meta))
        records = await self.store.prompt_records(namespace, prompt_ids, step)
        hist = await self.store.read_batch(namespace, prompt_ids, step)
        w = self._eb_posterior(namespace, hist, step, self.settings.visit_half_life)
        mean = w @ grid.GRID
        sd = np.sqrt(np.maximum(w @ grid.GRID**2 - mean**2, 0.0))
        return [
            PromptView(r, a0 + r.evidence_successes, b0 + r.evidence_failures, float(m), float(s))
            for r, m, s in zip(records, mean, sd, strict=True)
        ]

    async def summary(self, namespace: str) -> NamespaceSummary:
        check_namespace(namespace)
        meta = await self.store.namespace_meta(namespace)
        a0, b0 = self.prior(_moments(meta))
        prior = self.grid_prior(namespace, await self.store.last_visit_pairs(namespace))
        mean = float(prior @ grid.GRID)
        sd = float(np.sqrt(max(float(prior @ grid.GRID**2) - mean**2, 0.0)))
        hist = [
            {"p_low": i / HIST_BINS, "p_high": (i + 1) / HIST_BINS, "prompts": int(meta[f"h{i}"])}
            for i in range(HIST_BINS)
        ]
        tok_w = meta.get("tok_w", 0.0)
        return NamespaceSummary(
            namespace,
            int(meta["prompts"]),
            int(meta.get("solved", 0)),
            int(meta.get("unsolved", 0)),
            int(meta.get("allocations", 0)),
            int(meta.get("reports", 0)),
            a0,
            b0,
            mean,
            sd,
            meta.get("tok_sum", 0.0) / tok_w if tok_w > 0 else None,
            hist,
        )

    async def allocation(self, namespace: str, allocation_id: str) -> dict:
        check_namespace(namespace)
        if allocation_id != "latest" and not ALLOCATION_ID_RE.fullmatch(allocation_id):
            raise InvalidArgument(
                f"{allocation_id!r} is not an allocation id", field="allocation_id"
            )
        return await self.store.get_allocation(namespace, allocation_id)

    async def namespaces(self) -> list[str]:
        return await self.store.namespaces()

    async def prompt_ids(self, namespace: str, cursor: int, limit: int) -> tuple[list[str], int]:
        """A page of the namespace's prompt ids and the next cursor (0: the last page);
        NotFound for an unknown namespace."""
        check_namespace(namespace)
        await self.store.namespace_meta(namespace)
        return await self.store.scan_prompt_ids(namespace, cursor, limit)

    async def ping(self) -> None:
        """Unavailable unless Redis answers."""
        await self.store.ping()

    async def refresh_gauges(self) -> None:
        """The gauges a scrape reads: prompts tracked, solved and unsolved (they keep their last
        values while Redis is away) and the record cache's counters."""
        with contextlib.suppress(Unavailable):
            counts = await self.store.prompt_counts()
            self.metrics.prompts_tracked.set(counts["prompts"])
            self.metrics.prompts_solved.set(counts["solved"])
            self.metrics.prompts_unsolved.set(counts["unsolved"])
        cache = self.store.known.records
        self.metrics.sync_record_cache(cache.hits, cache.misses, cache.entries)


def _check_counts(
    succ: np.ndarray, trials: np.ndarray, tokens: np.ndarray, max_tokens_per_rollout: int
) -> None:
    """Reject the first outcome with a negative count, more successes than trials, or more
    tokens than its trials can have produced (one outlier would skew the token mean for good)."""
    for arr, name in ((trials, "trials"), (succ, "successes"), (tokens, "total_tokens")):
        bad = np.flatnonzero(arr < 0)
        check(bad.size == 0, f"outcomes[{bad[0] if bad.size else 0}].{name}", "must be >= 0")
    too_long = np.flatnonzero(tokens > trials * max_tokens_per_rollout)
    if too_long.size:
        i = int(too_long[0])
        raise InvalidArgument(
            f"{tokens[i]} tokens is more than {trials[i]} trials x {max_tokens_per_rollout} "
            "(max_tokens_per_rollout)",
            field=f"outcomes[{i}].total_tokens",
        )
    over = np.flatnonzero(succ > trials)
    if over.size:
        i = int(over[0])
        raise InvalidArgument(
            f"{succ[i]} successes is more than the {trials[i]} trials",
            field=f"outcomes[{i}].successes",
        )


def _moments(meta: dict[str, float]) -> RateMoments:
    return RateMoments(
        meta.get("prompts", 0.0),
        meta.get("sum_p", 0.0),
        meta.get("sum_p2", 0.0),
        meta.get("sum_inv_t", 0.0),
    )
