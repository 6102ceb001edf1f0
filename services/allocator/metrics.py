"""The allocator's Prometheus metrics (one registry per process; bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
)
N_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)


class AllocatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.allocate_seconds = Histogram(
            "krl_allocator_allocate_duration_seconds",
            "Allocate latency inside the server (Redis read, solve, record).",
            ["mode"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.solve_seconds = Histogram(
            "krl_allocator_solve_duration_seconds", "Solver time of one allocation.",
            ["mode"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.report_seconds = Histogram(
            "krl_allocator_report_duration_seconds", "ReportOutcomes latency inside the server.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rollouts_per_prompt = Histogram(
            "krl_allocator_rollouts_per_prompt", "Rollouts allotted to one prompt.",
            ["mode"], buckets=N_BUCKETS, registry=r,
        )  # fmt: skip
        self.allocations = Counter(
            "krl_allocator_allocations_total", "Allocations served.", ["mode"], registry=r
        )
        self.prompts_allocated = Counter(
            "krl_allocator_prompts_allocated_total", "Prompts in served allocations.", registry=r
        )
        self.reports = Counter(
            "krl_allocator_report_outcomes_total",
            "Per-prompt outcomes received, by result (accepted, duplicate, rejected).",
            ["result"], registry=r,
        )  # fmt: skip
        self.redis_restarts = Counter(
            "krl_allocator_embedded_redis_restarts_total",
            "Times the embedded redis-server died and was restarted.",
            registry=r,
        )
        self.zero_variance_groups = Counter(
            "krl_allocator_zero_variance_groups_total",
            "Reported groups with no reward variance, by kind (all_correct, all_wrong).",
            ["kind"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "krl_allocator_errors_total", "Requests that failed, by gRPC code.",
            ["method", "code"], registry=r,
        )  # fmt: skip
        self.prompts_tracked = Gauge(
            "krl_allocator_prompts_tracked", "Prompts with a history, over all namespaces.",
            registry=r,
        )  # fmt: skip
        self.prompts_solved = Gauge(
            "krl_allocator_prompts_solved",
            "Prompts whose last visit was all correct, over all namespaces.", registry=r,
        )  # fmt: skip
        self.prompts_unsolved = Gauge(
            "krl_allocator_prompts_unsolved",
            "Prompts whose last visit was all wrong, over all namespaces.", registry=r,
        )  # fmt: skip
        for result in ("accepted", "duplicate", "rejected"):
            self.reports.labels(result)
        for kind in ("all_correct", "all_wrong"):
            self.zero_variance_groups.labels(kind)
