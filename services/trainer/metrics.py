"""The trainer's Prometheus metrics (one registry per process; bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASES = ("allocate", "generate", "train", "weight_sync", "eval", "checkpoint")
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
N_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.step = Gauge("krl_trainer_step", "Training steps completed.", registry=r)
        self.policy_version = Gauge(
            "krl_trainer_policy_version",
            "Last weight version pushed to the rollout service.",
            registry=r,
        )
        self.effective_rollout_ratio = Gauge(
            "krl_trainer_effective_rollout_ratio",
            "Share of the step's rollouts in groups with non-zero reward variance.",
            registry=r,
        )
        self.effective_prompt_ratio = Gauge(
            "krl_trainer_effective_prompt_ratio",
            "Share of the step's prompts whose group has non-zero reward variance.",
            registry=r,
        )
        self.all_correct = Gauge(
            "krl_trainer_all_correct_ratio", "Share of the step's prompts all correct.", registry=r
        )
        self.all_wrong = Gauge(
            "krl_trainer_all_wrong_ratio", "Share of the step's prompts all wrong.", registry=r
        )
        self.reward = Gauge("krl_trainer_reward_mean", "Mean reward of the step.", registry=r)
        self.heldout = Gauge(
            "krl_trainer_heldout_accuracy_ratio",
            "Held-out greedy accuracy, by level ('all').",
            ["level"],
            registry=r,
        )
        self.loss = Gauge("krl_trainer_loss", "Policy loss of the last step.", registry=r)
        self.rollouts = Counter("krl_trainer_rollouts_total", "Rollouts trained on.", registry=r)
        self.tokens = Counter(
            "krl_trainer_completion_tokens_total", "Completion tokens generated.", registry=r
        )
        self.zero_variance_groups = Counter(
            "krl_trainer_zero_variance_groups_total",
            "Groups with equal rewards (no gradient).",
            registry=r,
        )
        self.rollouts_per_step = Gauge(
            "krl_trainer_rollouts_per_step", "Rollouts of the last step.", registry=r
        )
        self.tokens_per_step = Gauge(
            "krl_trainer_tokens_per_step", "Completion tokens of the last step.", registry=r
        )
        self.max_n = Gauge(
            "krl_trainer_max_n", "Largest n given to one prompt in the last step.", registry=r
        )
        self.n_per_prompt = Histogram(
            "krl_trainer_n_per_prompt",
            "Rollouts given to each prompt.",
            buckets=N_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            "krl_trainer_phase_seconds",
            "Time of each phase of a step.",
            ["phase"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "krl_trainer_step_seconds",
            "Wall time of a whole step.",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "krl_trainer_recoveries_total",
            "Times the loop re-pushed weights or resumed after a service restart.",
            registry=r,
        )
        for p in PHASES:
            self.phase_seconds.labels(p)
