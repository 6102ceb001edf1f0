"""Building a run: build_trainer makes every part a Trainer trains with (task data, clients,
policy, optimizer, a checkpoint's state); TrainerRun is what the control APIs see of a run from
before its trainer exists (warm-up can take minutes) to its end."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from krl.clients.fleet import RolloutFleet
from krl.common.errors import InvalidArgument
from krl.model.loading import load_model, load_tokenizer
from krl.rl.data import EpochSampler
from krl.rl.runlog import RunLog
from krl.tasks.factory import load_source
from krl.trainer import checkpoint as ckpt
from krl.trainer.control import FAILED, Control, Status
from krl.trainer.loop import Trainer
from krl.trainer.metrics import TrainerMetrics
from krl.trainer.policy import prepare_policy
from krl.trainer.settings import TrainerSettings
from krl_client import AllocatorClient
from krl_client.session import Journal

log = logging.getLogger(__name__)


def build_trainer(
    s: TrainerSettings, metrics: TrainerMetrics, control: Control, status: Status, runlog: RunLog
) -> Trainer:
    """A trainer ready to run: resumed from the run folder's latest checkpoint when it has one
    (of this run: same namespace and seed), else with the warmed-up policy."""
    if s.device != "cpu" and not torch.cuda.is_available():
        raise InvalidArgument(f"device {s.device!r}: torch sees no CUDA device", field="device")
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    run_dir = Path(s.run_dir)
    source = load_source(
        s.task,
        seed=s.warmup_seed,
        train_per_level=s.train_per_level,
        heldout_per_level=s.eval_per_level,
    )
    kw = {
        "token": s.peer(),
        "retries": s.client_retries,
        "backoff_s": s.client_backoff_s,
        "max_backoff_s": s.client_max_backoff_s,
    }
    latest = ckpt.latest(run_dir / "checkpoints")
    state = None
    if latest is not None:
        state = ckpt.load_state(latest)
        if state.namespace != s.run_namespace or state.seed != s.seed:
            raise RuntimeError(
                f"checkpoint {latest} belongs to another run "
                f"(namespace {state.namespace}, seed {state.seed})"
            )
        policy_dir = latest
    else:

        def progress(step: int, loss: float) -> None:
            if step % 25 == 0 or step == 1:
                runlog.event("warmup", {"step": step, "of": s.warmup(), "loss": loss})

        policy_dir = prepare_policy(
            s.model,
            tasks=source.train,
            task_name=s.task,
            warmup_steps=s.warmup(),
            warmup_lr=s.warmup_lr,
            seed=s.warmup_seed,
            cache_dir=s.cache_dir,
            progress=progress,
        )
    model = load_model(policy_dir).to(s.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    trainer = Trainer(
        s,
        metrics=metrics,
        control=control,
        status=status,
        runlog=runlog,
        source=source,
        sampler=EpochSampler([t.id for t in source.train], s.prompts_per_step, s.seed),
        allocator=AllocatorClient(s.allocator, s.run_namespace, timeout_s=30.0, **kw),
        rollout=RolloutFleet(s.rollout, **kw),
        journal=Journal(run_dir / "allocations.jsonl"),
        tokenizer=load_tokenizer(policy_dir),
        model=model,
        optimizer=optimizer,
        reference=load_model(policy_dir).to(s.device) if s.kl_beta > 0 else None,
        resumed=state,
    )
    if latest is not None and state is not None:
        ckpt.load_trainer_parts(latest, optimizer)
        runlog.truncate_after(state.step)
        control.last_checkpoint = str(latest)
        log.info(
            "resumed from %s at step %d (data cursor epoch %d, offset %d)",
            latest,
            state.step,
            *state.cursor,
        )
    return trainer


class TrainerRun:
    """One run as the process serves it: its control, status and metrics exist from the start;
    its trainer once built (run() builds it in the worker thread, then runs it)."""

    def __init__(
        self,
        settings: TrainerSettings,
        metrics: TrainerMetrics | None = None,
        control: Control | None = None,
    ) -> None:
        self.s = settings
        self.metrics = metrics or TrainerMetrics()
        self.control = control or Control()
        self.status = Status(total_steps=settings.steps)
        self.run_dir = Path(settings.run_dir)
        self.runlog = RunLog(self.run_dir)
        self.trainer: Trainer | None = None

    @property
    def step(self) -> int:
        return self.trainer.step if self.trainer is not None else self.status.step

    def save_checkpoint(self) -> Path:
        if self.trainer is None:
            raise RuntimeError("the trainer is not built yet")
        return self.trainer.save_checkpoint()

    def run(self) -> str:
        """Build the trainer and run it to the end: FINISHED (or stopped) or FAILED."""
        try:
            self.trainer = build_trainer(
                self.s, self.metrics, self.control, self.status, self.runlog
            )
        except Exception as e:
            self.control.state = FAILED
            self.control.error = f"{type(e).__name__}: {e}"
            log.exception("the trainer could not be built")
            self.runlog.event("failed", {"step": self.step, "error": self.control.error})
            return FAILED
        return self.trainer.run()
