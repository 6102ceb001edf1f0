"""The rows of a run's metrics.jsonl, declared once: the trainer writes them (trainer/record.py,
its evaluations in trainer/loop.py), the simulator writes rows of the same names where they mean
the same thing (sim/engine.py), and the report, `krl up` and the experiments read them. The keys
that rows carry are checked against these declarations by the tests."""

from __future__ import annotations

from typing import Literal, TypedDict


class StepRow(TypedDict, total=False):
    """One training update (kind "step")."""

    kind: Literal["step"]
    step: int
    epoch: float
    """Batches drawn so far, in epochs of the training set."""
    rollouts: int
    """Rollouts generated in this update (all rounds)."""
    rollouts_total: int
    effective_rollout_ratio: float
    """Rollouts that carried a gradient (in a group with both outcomes, trained on) / rollouts."""
    effective_prompt_ratio: float
    all_correct: float
    all_wrong: float
    max_n: int
    n_counts: dict[str, int]
    """n -> prompts allocated that n."""
    rounds: int
    dropped_informative: int
    prompts: int
    """Prompts that got at least one rollout."""
    success_rate: float
    zero_rollout_prompts: int
    # the trainer's
    time: float
    policy_version: int
    allocation_id: str
    replayed: bool
    solve_ms: float
    reward: float
    zero_variance_groups: int
    tokens: int
    loss: float | None
    grad_norm: float | None
    clip_fraction: float | None
    behaviour_kl: float | None
    trained_sequences: int
    reported: int
    report_duplicates: int
    t_allocate: float
    t_generate: float
    t_train: float
    t_weight_sync: float
    t_step: float
    rollouts_per_s: float | None
    # the simulator's
    expected_effective_ratio: float
    """Closed form of the effective-rollout ratio at the true p (less noisy than the draw)."""
    expected_value: float
    """The paper's objective sum_i Value(n_i, p_i) at the true p."""
    train_accuracy: float


class EvalRow(TypedDict, total=False):
    """One held-out evaluation (kind "eval")."""

    kind: Literal["eval"]
    step: int
    rollouts_total: int
    accuracy: dict[str, float]
    """"all" and, from the trainer, one entry per task level."""
    seconds: float
    policy_version: int


Row = StepRow | EvalRow
STEP_KEYS = frozenset(StepRow.__annotations__)
EVAL_KEYS = frozenset(EvalRow.__annotations__)


def undeclared(row: dict) -> set[str]:
    """The keys of a row that its kind's declaration does not name (a test keeps this empty)."""
    keys = EVAL_KEYS if row.get("kind") == "eval" else STEP_KEYS
    return set(row) - keys
