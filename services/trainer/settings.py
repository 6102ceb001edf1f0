"""Trainer settings (env prefix KRL_TRAINER_). Everything that shapes the run is here and is
saved to the run folder, so `--resume` continues the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from krl.common.config import ServiceSettings, secret
from krl.common.errors import InvalidArgument
from krl.rl.strategies import Strategy, default_probe
from krl.tasks.factory import parse_task
from krl_client.messages import LossAgg, Objective

# Fields that may differ between a run and its resumption (where to find things, not what to do).
RESUMABLE_CHANGES = frozenset(
    {
        "host",
        "grpc_port",
        "http_port",
        "auth_token",
        "auth_token_file",
        "log_level",
        "grace_s",
        "allocator",
        "rollout",
        "peer_token",
        "peer_token_file",
        "resume",
        "steps",
        "threads",
        "client_retries",
        "client_backoff_s",
        "client_max_backoff_s",
        "run_dir",
        "rollout_budget",
    }
)


class TrainerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KRL_TRAINER_", extra="forbid")

    grpc_port: int = Field(50053, ge=0, le=65535, description="gRPC control port (0: any free).")
    http_port: int = Field(8002, ge=0, le=65535, description="HTTP port: /metrics, /healthz.")

    # where the other services are
    allocator: str = Field("127.0.0.1:50051", description="Allocator gRPC target host:port.")
    rollout: str = Field(
        "127.0.0.1:50052",
        description="Rollout service(s): host:port, a list h1:p1,h2:p2, or dns:///name:port "
        "(every address, e.g. a headless Service's pods): Generate is split across them, weights "
        "go to all.",
    )
    peer_token: SecretStr | None = Field(None, description="Bearer token sent to both services.")
    peer_token_file: Path | None = Field(None, description="Read the peer token from this file.")
    client_retries: int = Field(
        30,
        ge=0,
        description="Retries on UNAVAILABLE and kin, per call (the defaults ride out an outage "
        "of about 4 min).",
    )
    client_backoff_s: float = Field(
        0.5, gt=0, description="First retry delay; doubles each retry (with jitter)."
    )
    client_max_backoff_s: float = Field(
        10.0,
        gt=0,
        description="Longest wait between two retries (with jitter: x0.5-1.5), so a call goes "
        "through soon after a service is back.",
    )

    # the run
    run_dir: Path = Field(Path("runs/latest"), description="Run folder (metrics, checkpoints).")
    namespace: str = Field("", description="Allocator namespace (default: the run folder name).")
    resume: bool = Field(False, description="Continue the run in run_dir from its checkpoint.")
    task: str = Field("reverse", description="reverse | arithmetic | jsonl:PATH | reasoning_gym:X")
    train_per_level: int = Field(
        512, ge=1, description="Training prompts per level (procedural tasks)."
    )
    seed: int = Field(0, ge=0, description="Seeds the data order and sampling (see warmup_seed).")
    steps: int = Field(400, ge=1, description="Training steps (policy updates).")
    rollout_budget: int = Field(
        0,
        ge=0,
        description="Also stop once this many rollouts were generated (0: no limit); "
        "compares strategies at equal compute, e.g. dapo against the others.",
    )
    threads: int = Field(0, ge=0, description="torch threads (0: torch's default).")
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="torch device of the policy: cpu, cuda, cuda:N.",
    )
    bf16: bool = Field(False, description="Forward and backward passes under bf16 autocast.")

    # the policy
    model: str = Field("tiny", description="'tiny' (built in code) or a local HF model folder.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Supervised warm-up steps (default: 150 for tiny, 0 otherwise)."
    )
    warmup_lr: float = Field(1e-3, gt=0, description="Warm-up learning rate.")
    warmup_seed: int = Field(
        0,
        ge=0,
        description="Seeds the task's generated prompts, the from-scratch model and its warm-up, "
        "apart from `seed`: runs of different seeds share one warmed-up policy and one data "
        "set, and differ only in data order and sampling (a paired comparison of strategies).",
    )
    cache_dir: Path = Field(Path(".krl/models"), description="Where warmed-up policies are kept.")

    # allocation
    strategy: Strategy = Field(Strategy.KNAPSACK_EB, description="How rollouts are handed out.")
    prompts_per_step: int = Field(64, ge=1, description="Prompts drawn per step (M).")
    rollouts_per_prompt: int = Field(
        8, ge=1, description="Budget per step is M x this (the uniform baseline's n)."
    )
    min_n: int = Field(2, ge=0, description="Fewest rollouts a prompt gets (knapsack).")
    max_n: int = Field(64, ge=1, description="Most rollouts a prompt gets (knapsack).")
    probe_n: int | None = Field(
        None,
        ge=1,
        description="knapsack-probe: rollouts every prompt gets first, before the rest of the "
        "budget is allocated with what they showed (default: half of rollouts_per_prompt).",
    )
    dapo_max_rounds: int = Field(
        8, ge=1, description="dapo: most generation batches of M prompts per update."
    )
    objective: Objective | None = Field(
        None,
        description="knapsack modes: the objective the allocator maximises (default: the one "
        "made for loss_agg, which the trainer declares).",
    )
    visit_half_life: float | None = Field(
        None,
        ge=0,
        description="knapsack-eb: evidence half-life in a prompt's visits (0: never decays; "
        "default: the allocator's).",
    )

    # sampling
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (and of the loss).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(24, ge=1, description="Longest completion.")

    # optimisation
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    adv_scale: Literal["std", "none"] = Field(
        "std", description="Group advantage: (r - mean) / std, or r - mean."
    )
    adv_clip: float = Field(5.0, gt=0, description="Advantages are clipped to +- this.")
    reward: Literal["score", "success"] = Field(
        "score",
        description="What the loss trains on: score (the verifier's reward, with its partial "
        "credit where it gives any) or success (1 when that reward reaches the rollout "
        "service's success threshold, else 0: binary, as the allocator and the held-out "
        "accuracy count it).",
    )
    loss_agg: LossAgg = Field(
        "prompt-mean",
        description="How the loss weighs rollouts: prompt-mean (every prompt's group weighs the "
        "same whatever its n), token-mean, seq-mean-token-mean or seq-mean-token-sum (verl's "
        "names: a prompt with n rollouts weighs n-fold). Declared to the allocator, which "
        "maximises the objective made for it.",
    )
    eps_low: float = Field(0.2, ge=0, lt=1, description="PPO clip below 1.")
    eps_high: float = Field(0.28, ge=0, description="PPO clip above 1.")
    kl_beta: float = Field(0.0, ge=0, description="KL-to-reference weight (0: no reference).")
    micro_batch_tokens: int = Field(8192, ge=64, description="Padded tokens per micro-batch.")

    # cadence
    push_every: int = Field(1, ge=1, description="Push weights to the rollout service every K.")
    eval_every: int = Field(20, ge=0, description="Held-out greedy eval every E steps (0: ends).")
    eval_per_level: int = Field(64, ge=1, description="Held-out prompts per level.")
    checkpoint_every: int = Field(50, ge=0, description="Checkpoint every C steps (0: end only).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainerSettings:
        m = self.prompts_per_step
        if self.client_max_backoff_s < self.client_backoff_s:
            raise ValueError(
                f"client_max_backoff_s ({self.client_max_backoff_s}) is below client_backoff_s "
                f"({self.client_backoff_s})"
            )
        if self.min_n > self.max_n:
            raise ValueError(f"min_n ({self.min_n}) is above max_n ({self.max_n})")
        if self.budget < m * self.min_n:
            raise ValueError(
                f"the budget M x rollouts_per_prompt = {m} x {self.rollouts_per_prompt} = "
                f"{self.budget} is below M x min_n = {m * self.min_n}"
            )
        if self.strategy.startswith("knapsack") and self.budget > m * self.max_n:
            raise ValueError(f"the budget {self.budget} is above M x max_n = {m * self.max_n}")
        if self.strategy == Strategy.KNAPSACK_PROBE and not (
            1 <= self.probe_rollouts < self.rollouts_per_prompt
        ):
            raise ValueError(
                f"probe_n ({self.probe_rollouts}) must be below rollouts_per_prompt "
                f"({self.rollouts_per_prompt}): the probe is part of each prompt's budget"
            )
        return self

    @property
    def probe_rollouts(self) -> int:
        """knapsack-probe's probe per prompt: probe_n, or half of rollouts_per_prompt."""
        return self.probe_n if self.probe_n is not None else default_probe(self.rollouts_per_prompt)

    @model_validator(mode="after")
    def _model_and_task(self) -> TrainerSettings:
        if self.model != "tiny" and not (Path(self.model) / "config.json").is_file():
            raise ValueError(
                f"model {self.model!r} is neither 'tiny' nor a local HF model folder "
                "(no config.json there)"
            )
        try:
            parse_task(self.task)
        except InvalidArgument as e:
            raise ValueError(str(e)) from None
        return self

    @property
    def budget(self) -> int:
        return self.prompts_per_step * self.rollouts_per_prompt

    @property
    def run_namespace(self) -> str:
        return self.namespace or self.run_dir.resolve().name

    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return 150 if self.model == "tiny" else 0

    def peer(self) -> str | None:
        """The bearer token sent to the allocator and the rollout service."""
        return secret(self.peer_token, self.peer_token_file)


def default_run_dir(strategy: str) -> Path:
    import time

    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy}"


def resolve_run(settings: TrainerSettings, explicit: set[str]) -> TrainerSettings:
    """Check the run folder against the settings before anything starts.

    A fresh run needs a folder that holds no run yet. `resume` takes the settings saved in the
    folder; of the settings given now (explicit), only those in RESUMABLE_CHANGES may differ."""
    import json

    saved_path = settings.run_dir / "settings.json"
    has_run = saved_path.exists() or (settings.run_dir / "metrics.jsonl").exists()
    if not settings.resume:
        if has_run:
            raise ValueError(
                f"run folder {settings.run_dir} already holds a run: resume it with --resume "
                "or choose another --run-dir"
            )
        return settings
    if not saved_path.exists():
        raise ValueError(f"nothing to resume in {settings.run_dir} (no settings.json)")
    saved = json.loads(saved_path.read_text())
    now = settings.model_dump(mode="json")
    changed = sorted(
        k for k in explicit if k not in RESUMABLE_CHANGES and k in saved and now.get(k) != saved[k]
    )
    if changed:
        raise ValueError(
            "a resumed run keeps its settings; these differ from the run's: "
            + ", ".join(f"{k} ({saved[k]!r} -> {now[k]!r})" for k in changed)
        )
    keep = {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES and v != "**********"}
    merged = {**now, **keep}
    merged = {k: v for k, v in merged.items() if v is not None or k in now}
    out = TrainerSettings.model_validate(
        {**merged, **{k: getattr(settings, k) for k in ("auth_token", "peer_token")}}
    )
    return out


def dump_settings(run_dir: Path, settings: TrainerSettings) -> None:
    """The run's settings, secrets masked: what --resume continues with."""
    import json

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(settings.public_dict(), indent=1))
