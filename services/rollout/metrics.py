"""The rollout service's Prometheus metrics (one registry per process; bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
REWARD_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.999, 1.0)


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tokens = Counter(
            "krl_rollout_generated_tokens_total", "Completion tokens generated.", registry=r
        )
        self.completions = Counter(
            "krl_rollout_completions_total",
            "Completions generated, by finish reason.",
            ["finish_reason"],
            registry=r,
        )
        self.groups = Counter("krl_rollout_groups_total", "Prompt groups delivered.", registry=r)
        self.group_seconds = Histogram(
            "krl_rollout_group_latency_seconds",
            "Time from the Generate call to a group's delivery.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_prompts = Gauge(
            "krl_rollout_queue_prompts", "Prompts accepted and not yet delivered.", registry=r
        )
        self.requests_in_flight = Gauge(
            "krl_rollout_requests_in_flight", "Generate calls running or waiting.", registry=r
        )
        self.reward = Histogram(
            "krl_rollout_reward", "Reward of each completion.", buckets=REWARD_BUCKETS, registry=r
        )
        self.policy_version = Gauge(
            "krl_rollout_policy_version", "Policy version being served.", registry=r
        )
        self.weight_load_seconds = Histogram(
            "krl_rollout_weight_load_duration_seconds",
            "Time to swap in new weights.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_errors = Counter(
            "krl_rollout_engine_errors_total", "Engine failures during generation.", registry=r
        )
        self.engine_restarts = Counter(
            "krl_rollout_engine_restarts_total",
            "Engine replicas restarted after dying.",
            registry=r,
        )
        self.errors = Counter(
            "krl_rollout_errors_total",
            "Requests that failed, by gRPC code.",
            ["method", "code"],
            registry=r,
        )
        for reason in ("stop", "length"):
            self.completions.labels(reason)
