"""The training loop (DESIGN.md, one training step):

    1. draw M prompt ids (EpochSampler: a pure function of seed and step)
    2. Allocate -> n per prompt (journaled before any rollout, replayed on a redo)
    3. Generate -> groups of different sizes, with behaviour logprobs and rewards
    4. ReportOutcomes (idempotent; right after generation so a crash in training loses nothing)
    5. GRPO update on the groups with non-zero reward variance
    6. every K steps: UpdateWeights with a new version
    + held-out greedy evaluation every E steps, checkpoints every C steps, one metrics.jsonl row
      per step and per evaluation.

Service restarts: both clients retry UNAVAILABLE with capped exponential backoff (settings
client_retries, client_backoff_s, client_max_backoff_s); a rollout service that
came back with older weights (FAILED_PRECONDITION on min_policy_version) gets the current weights
pushed again and the groups not yet delivered are asked for again, so no group is lost or
counted twice. The loop runs in a worker thread; Control pauses, checkpoints and stops it
between steps."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from krl.clients.fleet import RolloutFleet
from krl.clients.rollout import Group, PromptSpec
from krl.common.errors import FailedPrecondition
from krl.model.weights import to_bytes
from krl.rl.data import EpochSampler
from krl.rl.runlog import RunLog
from krl.rl.step import StepRounds
from krl.rl.strategies import solve_kw
from krl.tasks.base import Task, TaskSource
from krl.trainer import checkpoint as ckpt
from krl.trainer import grpo
from krl.trainer.control import FAILED, FINISHED, RUNNING, STOPPING, Control, Status
from krl.trainer.metrics import TrainerMetrics
from krl.trainer.record import observe, step_row
from krl.trainer.rollouts import PolicyRollouts
from krl.trainer.settings import TrainerSettings
from krl.trainer.stats import accuracy_by_level
from krl_client import AllocatorClient
from krl_client.session import Journal

log = logging.getLogger(__name__)


class Trainer:
    """One run's loop, built whole by build.build_trainer (every part it trains with is an
    argument here; nothing is created later)."""

    def __init__(
        self,
        settings: TrainerSettings,
        *,
        metrics: TrainerMetrics,
        control: Control,
        status: Status,
        runlog: RunLog,
        source: TaskSource,
        sampler: EpochSampler,
        allocator: AllocatorClient,
        rollout: RolloutFleet,
        journal: Journal,
        tokenizer: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        reference: torch.nn.Module | None,
        resumed: ckpt.TrainerState | None = None,
    ) -> None:
        s = settings
        self.s = s
        self.metrics = metrics
        self.control = control
        self.status = status
        self.run_dir = Path(s.run_dir)
        self.runlog = runlog
        self.source = source
        self.eval_tasks = source.heldout
        self.sampler = sampler
        self.allocator = allocator
        self.rollout = rollout
        self.journal = journal
        self.tokenizer = tokenizer
        self.model = model
        self.optimizer = optimizer
        self.reference = reference
        self.loss_cfg = grpo.LossConfig(
            s.eps_low, s.eps_high, s.kl_beta, s.temperature, loss_agg=s.loss_agg, bf16=s.bf16
        )
        self._prompt_ids: dict[str, list[int]] = {}
        self.pushed_step = -1
        r = resumed
        self.step = r.step if r else 0  # steps completed
        self.rounds = StepRounds(
            allocator,
            PolicyRollouts(
                self.generate,
                source.get,
                temperature=s.temperature,
                top_p=s.top_p,
                max_new_tokens=s.max_new_tokens,
                reward=s.reward,
            ),
            sampler,
            s.strategy,
            s.budget,
            s.min_n,
            s.max_n,
            probe_n=s.probe_rollouts,
            dapo_max_rounds=s.dapo_max_rounds,
            rollout_budget=s.rollout_budget,
            seed=s.seed,
            loss_agg=s.loss_agg,
            solve_kw=solve_kw(s.objective, s.visit_half_life),
            journal=journal,
            topups=Journal(journal.path.with_name("topups.jsonl")),
            batches=r.batches if r else 0,
            rollouts_total=r.rollouts if r else 0,
        )
        """The step's generation rounds (krl.rl.step); knapsack-probe's second allocation of
        each step is journaled in topups.jsonl beside the first."""
        self.version = r.policy_version if r else 0
        self.status.step = self.step

    def start(self) -> None:
        """Meet the rollout service: wait until it serves, then give it our weights."""
        info = self.rollout.wait_ready(timeout_s=600.0)
        log.info(
            "rollout service: engine %s, model %s, version %d",
            info.engine,
            info.model,
            info.policy_version,
        )
        self.version = max(self.version, info.policy_version)
        self._push(force=True)

    # ---------------------------------------------------------------- pieces
    def _push(self, force: bool = False) -> float:
        if not force and self.pushed_step == self.step:
            return 0.0
        t0 = time.monotonic()
        payload = to_bytes(self.model)
        self.version += 1
        try:
            self.rollout.push_weights(self.version, payload=payload)
        except FailedPrecondition:
            # the service holds a newer version (another run's, or ours before a resume)
            self.version = self.rollout.info().policy_version + 1
            self.rollout.push_weights(self.version, payload=payload)
        self.pushed_step = self.step
        self.metrics.policy_version.set(self.version)
        self.status.policy_version = self.version
        return time.monotonic() - t0

    def generate(self, specs: list[PromptSpec], **sampling) -> dict[str, Group]:
        got: dict[str, Group] = {}
        for attempt in range(4):
            left = [p for p in specs if p.prompt_id not in got]
            if not left:
                break
            try:
                for g in self.rollout.generate(left, min_policy_version=self.version, **sampling):
                    got[g.prompt_id] = g
            except FailedPrecondition as e:
                if attempt == 3:
                    raise
                log.warning("rollout service lost our weights (%s); pushing them again", e)
                self.metrics.retries.inc()
                self._push(force=True)
        return got

    def _prompt_tokens(self, group, tasks: dict[str, Task]) -> list[int]:
        """The prompt's token ids as the engine saw them, so the policy is trained on what it
        was sampled from; a rollout service older than that field: our own tokenization."""
        return group.prompt_token_ids or self._tokens(tasks[group.prompt_id])

    def _tokens(self, task: Task) -> list[int]:
        ids = self._prompt_ids.get(task.id)
        if ids is None:
            ids = self.tokenizer(task.prompt, add_special_tokens=False)["input_ids"]
            self._prompt_ids[task.id] = ids
        return ids

    def evaluate(self) -> dict[str, float]:
        t0 = time.monotonic()
        self._push()
        specs = [
            PromptSpec(t.id, 1, text=t.prompt, answer=t.answer, verifier=t.verifier)
            for t in self.eval_tasks
        ]
        groups = self.generate(
            specs, temperature=0.0, max_new_tokens=self.s.max_new_tokens, seed=self.s.seed
        )
        ok = {pid: g.completions[0].success for pid, g in groups.items()}
        acc = accuracy_by_level(ok, {t.id: t.level for t in self.eval_tasks})
        for k, v in acc.items():
            self.metrics.heldout.labels(k).set(v)
        self.status.heldout_accuracy = acc.get("all", math.nan)
        secs = time.monotonic() - t0
        self.metrics.phase_seconds.labels("eval").observe(secs)
        self.runlog.write(
            {
                "kind": "eval",
                "step": self.step,
                "accuracy": acc,
                "rollouts_total": self.rollouts_total,
                "seconds": round(secs, 3),
                "policy_version": self.version,
            }
        )
        return acc

    def save_checkpoint(self) -> Path:
        t0 = time.monotonic()
        state = ckpt.TrainerState(
            self.step,
            self.version,
            self.sampler.cursor(self.batches),
            self.s.seed,
            self.s.run_namespace,
            self.batches,
            self.rollouts_total,
        )
        path = ckpt.save(
            self.run_dir / "checkpoints",
            self.model,
            self.tokenizer,
            self.optimizer,
            state,
            self.s.keep_checkpoints,
        )
        self.control.last_checkpoint = str(path)
        self.metrics.phase_seconds.labels("checkpoint").observe(time.monotonic() - t0)
        self.runlog.event("checkpoint", {"step": self.step, "path": str(path)})
        return path

    # ---------------------------------------------------------------- one step
    @property
    def batches(self) -> int:
        """Batches of M prompts drawn (dapo: several a step)."""
        return self.rounds.batches

    @property
    def rollouts_total(self) -> int:
        return self.rounds.rollouts_total

    def budget_spent(self) -> bool:
        return self.rounds.budget_spent()

    def done(self) -> bool:
        return self.step >= self.s.steps or self.budget_spent()

    def train_one_step(self) -> dict:
        s = self.s
        k = self.step + 1
        t_start = time.monotonic()
        rounds, trained = self.rounds.step()
        tasks = {pid: self.source.get(pid) for r in rounds for pid in r.ids}
        adv = grpo.group_advantages(
            [[c.reward for c in g.completions] for g in trained], scale=s.adv_scale, clip=s.adv_clip
        )
        samples = [
            grpo.Sample(self._prompt_tokens(g, tasks), c.token_ids, c.logprobs, float(a), i)
            for i, (g, a_row, flat) in enumerate(
                zip(trained, adv.advantages, adv.zero_variance, strict=True)
            )
            if not flat
            for c, a in zip(g.completions, a_row, strict=True)
        ]
        t0 = time.monotonic()
        res = grpo.train_step(
            self.model,
            self.optimizer,
            samples,
            self.loss_cfg,
            max_tokens=s.micro_batch_tokens,
            max_grad_norm=s.max_grad_norm,
            pad_id=self.tokenizer.pad_token_id or 0,
            reference=self.reference,
        )
        t_train = time.monotonic() - t0
        self.step = k

        t_sync = 0.0
        if k % s.push_every == 0:
            t_sync = self._push()

        row, ns = step_row(
            self,
            k,
            rounds,
            trained,
            adv,
            len(samples),
            res,
            t_train=t_train,
            t_sync=t_sync,
            t_start=t_start,
        )
        self.runlog.write(row)
        observe(self, row, ns, res)
        return row

    # ---------------------------------------------------------------- the run
    def run(self) -> str:
        s = self.s
        c = self.control
        try:
            self.start()
            c.state = RUNNING
            if self.step == 0:
                self.evaluate()
            while not self.done() and not c.stop_requested:
                c.wait_if_paused(lambda: self.runlog.event("paused", {"step": self.step}))
                if c.stop_requested:
                    break
                self.train_one_step()
                if s.eval_every and self.step % s.eval_every == 0 and not self.done():
                    self.evaluate()
                due = s.checkpoint_every and self.step % s.checkpoint_every == 0
                requests = c.take_checkpoint_requests()
                if due or requests:
                    self.save_checkpoint()
                for ev in requests:
                    ev.set()
            c.state = STOPPING
            if self.done():
                self.evaluate()
            saved = self.control.last_checkpoint.endswith(f"step-{self.step:06d}")
            if (self.done() or c.checkpoint_on_stop) and not saved:
                self.save_checkpoint()
            for ev in c.take_checkpoint_requests():
                ev.set()
            c.state = FINISHED
            self.runlog.event("finished", {"step": self.step, "complete": self.done()})
            return FINISHED
        except Exception as e:
            c.state = FAILED
            c.error = f"{type(e).__name__}: {e}"
            log.exception("training failed at step %d", self.step)
            self.runlog.event("failed", {"step": self.step, "error": c.error})
            return FAILED
