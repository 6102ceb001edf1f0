"""The training loop (DESIGN.md, one training step):

    1. draw M prompt ids (EpochSampler: a pure function of seed and step)
    2. Allocate -> n per prompt (journaled before any rollout, replayed on a redo)
    3. Generate -> groups of different sizes, with behaviour logprobs and rewards
    4. ReportOutcomes (idempotent; right after generation so a crash in training loses nothing)
    5. GRPO update on the groups with non-zero reward variance
    6. every K steps: UpdateWeights with a new version
    + held-out greedy evaluation every E steps, checkpoints every C steps, one metrics.jsonl row
      per step and per evaluation.

Service restarts: both clients retry UNAVAILABLE with exponential backoff; a rollout service that
came back with older weights (FAILED_PRECONDITION on min_policy_version) gets the current weights
pushed again and the groups not yet delivered are asked for again, so no group is lost or
counted twice. The loop runs in a worker thread; Control pauses, checkpoints and stops it
between steps."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from krl.common.errors import FailedPrecondition, NotFound
from krl.model.loading import load_model, load_tokenizer
from krl.model.weights import to_bytes
from krl.rollout.client import Group, PromptSpec
from krl.rollout.fleet import RolloutFleet
from krl.tasks.base import Task, TaskSource
from krl.tasks.factory import load_source
from krl.trainer import checkpoint as ckpt
from krl.trainer import grpo
from krl.trainer.allocation import DYNAMIC, plan_step
from krl.trainer.data import EpochSampler
from krl.trainer.dynamic import keep_mask
from krl.trainer.metrics import TrainerMetrics
from krl.trainer.policy import prepare_policy
from krl.trainer.runlog import RunLog
from krl.trainer.settings import TrainerSettings
from krl.trainer.stats import GroupOutcome, accuracy_by_level, batch_stats
from krl_client import AllocatorClient
from krl_client.session import Journal, StepPlan

log = logging.getLogger(__name__)

STARTING, RUNNING, PAUSED, STOPPING, FINISHED, FAILED = (
    "starting", "running", "paused", "stopping", "finished", "failed",
)  # fmt: skip


class Control:
    """Thread-safe requests from the gRPC side, acted on between steps."""

    def __init__(self) -> None:
        self.state = STARTING
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self.stop_requested = False
        self.checkpoint_on_stop = True
        self._ckpt_requests: list[threading.Event] = []
        self.last_checkpoint = ""
        self.error = ""

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def stop(self, checkpoint: bool = True) -> None:
        with self._lock:
            self.stop_requested = True
            self.checkpoint_on_stop = checkpoint
        self._resume.set()

    def request_checkpoint(self) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            self._ckpt_requests.append(ev)
        return ev

    def take_checkpoint_requests(self) -> list[threading.Event]:
        with self._lock:
            out, self._ckpt_requests = self._ckpt_requests, []
        return out

    def wait_if_paused(self, on_pause: Callable[[], None]) -> None:
        if not self._resume.is_set():
            self.state = PAUSED
            on_pause()
            self._resume.wait()
            if not self.stop_requested:
                self.state = RUNNING


@dataclass
class Status:
    step: int = 0
    total_steps: int = 0
    policy_version: int = 0
    mean_reward: float = math.nan
    effective_rollout_ratio: float = math.nan
    heldout_accuracy: float = math.nan


@dataclass
class _Round:
    """One batch of M prompts: allocated, generated and reported."""

    ids: list[str]
    plan: StepPlan
    tasks: dict[str, Task]
    groups: list[Group]
    outcomes: dict[str, tuple[int, int, int]]
    """prompt id -> (successes, trials, tokens)"""
    accepted: int
    duplicates: int
    t_alloc: float
    t_gen: float


class Trainer:
    def __init__(self, settings: TrainerSettings, metrics: TrainerMetrics | None = None,
                 control: Control | None = None) -> None:  # fmt: skip
        self.s = settings
        self.metrics = metrics or TrainerMetrics()
        self.control = control or Control()
        self.status = Status(total_steps=settings.steps)
        self.run_dir = Path(settings.run_dir)
        self.version = 0
        self.step = 0  # steps completed
        self.batches = 0  # batches of M prompts drawn (dapo draws several per step)
        self.rollouts_total = 0
        self.pushed_step = -1

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        s = self.s
        if s.threads:
            torch.set_num_threads(s.threads)
        torch.manual_seed(s.seed)
        self.source: TaskSource = load_source(s.task, seed=s.warmup_seed, train_per_level=s.train_per_level,
                                              heldout_per_level=s.eval_per_level)  # fmt: skip
        self.sampler = EpochSampler([t.id for t in self.source.train], s.prompts_per_step, s.seed)
        token = s.peer()
        kw = {"token": token, "retries": s.client_retries, "backoff_s": s.client_backoff_s}
        self.allocator = AllocatorClient(s.allocator, s.run_namespace, timeout_s=30.0, **kw)
        self.rollout = RolloutFleet(s.rollout, **kw)
        self.runlog = RunLog(self.run_dir)
        self.journal = Journal(self.run_dir / "allocations.jsonl")

        latest = ckpt.latest(self.run_dir / "checkpoints")
        if latest is not None:
            state = ckpt.load_state(latest)
            if state.namespace != s.run_namespace or state.seed != s.seed:
                raise RuntimeError(f"checkpoint {latest} belongs to another run "
                                   f"(namespace {state.namespace}, seed {state.seed})")  # fmt: skip
            policy_dir = latest
        else:
            policy_dir = prepare_policy(
                s.model, tasks=self.source.train, task_name=s.task, warmup_steps=s.warmup(),
                warmup_lr=s.warmup_lr, seed=s.warmup_seed, cache_dir=s.cache_dir,
                progress=self._warmup_progress,
            )  # fmt: skip
        self.tokenizer = load_tokenizer(policy_dir)
        self.model = load_model(policy_dir)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=s.lr,
                                           weight_decay=s.weight_decay)  # fmt: skip
        self.reference = load_model(policy_dir) if s.kl_beta > 0 else None
        self.loss_cfg = grpo.LossConfig(s.eps_low, s.eps_high, s.kl_beta, s.temperature)
        self._prompt_ids: dict[str, list[int]] = {}
        self.eval_tasks = self.source.heldout
        if latest is not None:
            ckpt.load_trainer_parts(latest, self.optimizer)
            self.step = state.step
            self.batches = state.batches
            self.rollouts_total = state.rollouts
            self.version = state.policy_version
            self.runlog.truncate_after(self.step)
            self.control.last_checkpoint = str(latest)
            log.info("resumed from %s at step %d (data cursor epoch %d, offset %d)", latest,
                     self.step, *state.cursor)  # fmt: skip
        self.status.step = self.step
        info = self.rollout.wait_ready(timeout_s=600.0)
        log.info("rollout service: engine %s, model %s, version %d", info.engine, info.model,
                 info.policy_version)  # fmt: skip
        self.version = max(self.version, info.policy_version)
        self._push(force=True)

    def _warmup_progress(self, step: int, loss: float) -> None:
        if step % 25 == 0 or step == 1:
            self.runlog.event("warmup", {"step": step, "of": self.s.warmup(), "loss": loss})

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

    def _generate(self, specs: list[PromptSpec], **sampling) -> dict[str, Group]:
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

    def _tokens(self, task: Task) -> list[int]:
        ids = self._prompt_ids.get(task.id)
        if ids is None:
            ids = self.tokenizer(task.prompt, add_special_tokens=False)["input_ids"]
            self._prompt_ids[task.id] = ids
        return ids

    def evaluate(self) -> dict[str, float]:
        t0 = time.monotonic()
        self._push()
        specs = [PromptSpec(t.id, 1, text=t.prompt, answer=t.answer, verifier=t.verifier)
                 for t in self.eval_tasks]  # fmt: skip
        groups = self._generate(specs, temperature=0.0, max_new_tokens=self.s.max_new_tokens,
                                seed=self.s.seed)  # fmt: skip
        ok = {pid: g.completions[0].success for pid, g in groups.items()}
        acc = accuracy_by_level(ok, {t.id: t.level for t in self.eval_tasks})
        for k, v in acc.items():
            self.metrics.heldout.labels(k).set(v)
        self.status.heldout_accuracy = acc.get("all", math.nan)
        secs = time.monotonic() - t0
        self.metrics.phase_seconds.labels("eval").observe(secs)
        self.runlog.write({"kind": "eval", "step": self.step, "accuracy": acc,
                           "rollouts_total": self.rollouts_total, "seconds": round(secs, 3),
                           "policy_version": self.version})  # fmt: skip
        return acc

    def save_checkpoint(self) -> Path:
        t0 = time.monotonic()
        state = ckpt.TrainerState(self.step, self.version, self.sampler.cursor(self.batches),
                                  self.s.seed, self.s.run_namespace, self.batches,
                                  self.rollouts_total)  # fmt: skip
        path = ckpt.save(self.run_dir / "checkpoints", self.model, self.tokenizer, self.optimizer,
                         state, self.s.keep_checkpoints)  # fmt: skip
        self.control.last_checkpoint = str(path)
        self.metrics.phase_seconds.labels("checkpoint").observe(time.monotonic() - t0)
        self.runlog.event("checkpoint", {"step": self.step, "path": str(path)})
        return path

    # ---------------------------------------------------------------- one step
    def _round(self, step: int) -> _Round:
        """Draw the next batch of M prompts, allocate, generate and report it."""
        s = self.s
        g = self.batches + 1  # the batch's number: the allocator's step and the journal's key
        ids = self.sampler.batch(self.batches)
        t0 = time.monotonic()
        plan: StepPlan = plan_step(self.allocator, self.journal, step=g, prompt_ids=ids,
                               strategy=s.strategy, budget=s.budget, min_n=s.min_n,
                               max_n=s.max_n)  # fmt: skip
        t_alloc = time.monotonic() - t0
        tasks = {pid: self.source.get(pid) for pid in ids}
        specs = [PromptSpec(pid, n, text=tasks[pid].prompt, answer=tasks[pid].answer,
                            verifier=tasks[pid].verifier)
                 for pid, n in plan.n.items() if n > 0]  # fmt: skip
        t0 = time.monotonic()
        groups = self._generate(specs, temperature=s.temperature, top_p=s.top_p,
                                max_new_tokens=s.max_new_tokens, seed=s.seed * 1_000_003 + g)  # fmt: skip
        t_gen = time.monotonic() - t0
        missing = [p.prompt_id for p in specs if p.prompt_id not in groups]
        if missing:
            raise RuntimeError(f"step {step}: no group came back for {len(missing)} prompts")
        ordered = [groups[p.prompt_id] for p in specs]
        outcomes = {gr.prompt_id: (sum(c.success for c in gr.completions), len(gr.completions),
                                   sum(len(c.token_ids) for c in gr.completions))
                    for gr in ordered}  # fmt: skip
        try:
            rep = self.allocator.report(plan.allocation_id, outcomes)
            accepted, dupes = rep.accepted, int(rep.duplicates)  # a count over gRPC
        except NotFound as e:  # a replayed allocation that expired meanwhile
            log.warning("step %d: report not recorded: %s", step, e)
            accepted, dupes = 0, len(outcomes)
        self.batches += 1
        self.rollouts_total += sum(o[1] for o in outcomes.values())
        return _Round(ids, plan, tasks, ordered, outcomes, accepted, dupes, t_alloc, t_gen)

    def _rounds(self, step: int) -> tuple[list[_Round], list[Group]]:
        """The step's generation rounds and the groups it trains on: one round for the
        allocated strategies; for dapo, rounds until M informative groups (dynamic.py), at most
        dapo_max_rounds, and none that would start past the rollout budget."""
        s = self.s
        first = self._round(step)
        if s.strategy not in DYNAMIC:
            return [first], first.groups
        rounds, kept = [first], []
        while True:
            r = rounds[-1]
            mask = keep_mask([(o[1], o[0]) for o in (r.outcomes[g.prompt_id] for g in r.groups)],
                             s.prompts_per_step - len(kept))  # fmt: skip
            kept += [g for g, keep in zip(r.groups, mask, strict=True) if keep]
            if (len(kept) >= s.prompts_per_step or len(rounds) >= s.dapo_max_rounds
                    or self._budget_spent()):  # fmt: skip
                return rounds, kept
            rounds.append(self._round(step))

    def _budget_spent(self) -> bool:
        return bool(self.s.rollout_budget) and self.rollouts_total >= self.s.rollout_budget

    def done(self) -> bool:
        return self.step >= self.s.steps or self._budget_spent()

    def train_one_step(self) -> dict:
        s = self.s
        k = self.step + 1
        t_start = time.monotonic()
        rounds, trained = self._rounds(k)
        plan = rounds[0].plan
        tasks = {pid: t for r in rounds for pid, t in r.tasks.items()}
        adv = grpo.group_advantages([[c.reward for c in g.completions] for g in trained],
                                    scale=s.adv_scale, clip=s.adv_clip)  # fmt: skip
        samples = [
            grpo.Sample(self._tokens(tasks[g.prompt_id]), c.token_ids, c.logprobs, float(a))
            for g, a_row, flat in zip(trained, adv.advantages, adv.zero_variance, strict=True)
            if not flat
            for c, a in zip(g.completions, a_row, strict=True)
        ]
        t0 = time.monotonic()
        res = grpo.train_step(self.model, self.optimizer, samples, self.loss_cfg,
                              max_tokens=s.micro_batch_tokens, max_grad_norm=s.max_grad_norm,
                              pad_id=self.tokenizer.pad_token_id or 0, reference=self.reference)  # fmt: skip
        t_train = time.monotonic() - t0
        self.step = k

        t_sync = 0.0
        if k % s.push_every == 0:
            t_sync = self._push()

        groups = [g for r in rounds for g in r.groups]
        informative = sum(len({c.reward for c in g.completions}) > 1 for g in groups)
        outcomes = {pid: o for r in rounds for pid, o in r.outcomes.items()}
        unasked = sum(len(r.ids) - len(r.groups) for r in rounds)
        st = batch_stats([GroupOutcome(len(g.completions), outcomes[g.prompt_id][0])
                          for g in groups] + [GroupOutcome(0, 0)] * unasked)  # fmt: skip
        stats = st.as_dict()
        if st.rollouts:  # the rollouts that carried a gradient (dapo drops some informative ones)
            stats["effective_rollout_ratio"] = len(samples) / st.rollouts
        tokens = sum(o[2] for o in outcomes.values())
        rewards = [c.reward for g in groups for c in g.completions]
        ns = [n for r in rounds for n in r.plan.n.values()]
        t_alloc = sum(r.t_alloc for r in rounds)
        t_gen = sum(r.t_gen for r in rounds)
        step_s = time.monotonic() - t_start
        row = {
            "kind": "step", "step": k, "time": time.time(), "epoch": round(self.batches * s.prompts_per_step / len(self.source.train), 3),
            "policy_version": self.version, "allocation_id": plan.allocation_id,
            "replayed": plan.replayed, "solve_ms": round(sum(r.plan.solve_ms for r in rounds), 3),
            "reward": float(np.mean(rewards)) if rewards else 0.0,
            **stats, "rounds": len(rounds), "rollouts_total": self.rollouts_total,
            "zero_variance_groups": len(groups) - informative, "dropped_informative":
            informative - (len(trained) - sum(adv.zero_variance)),
            "tokens": tokens,
            "n_counts": {str(n): c for n, c in sorted(Tally(ns).items())},
            "loss": res.loss if res else None, "grad_norm": res.grad_norm if res else None,
            "clip_fraction": res.clip_fraction if res else None,
            "behaviour_kl": res.behaviour_kl if res else None,
            "trained_sequences": res.sequences if res else 0,
            "reported": sum(r.accepted for r in rounds),
            "report_duplicates": sum(r.duplicates for r in rounds),
            "t_allocate": round(t_alloc, 4), "t_generate": round(t_gen, 4),
            "t_train": round(t_train, 4), "t_weight_sync": round(t_sync, 4),
            "t_step": round(step_s, 4), "rollouts_per_s": round(st.rollouts / t_gen, 1) if t_gen > 0 else None,
        }  # fmt: skip
        self.runlog.write(row)
        self._observe(row, ns, res, t_alloc, t_gen, t_train, t_sync, step_s)
        return row

    def _observe(self, row, ns, res, t_alloc, t_gen, t_train, t_sync, step_s) -> None:
        m = self.metrics
        m.step.set(self.step)
        m.effective_rollout_ratio.set(row["effective_rollout_ratio"])
        m.effective_prompt_ratio.set(row["effective_prompt_ratio"])
        m.all_correct.set(row["all_correct"])
        m.all_wrong.set(row["all_wrong"])
        m.reward.set(row["reward"])
        if res is not None:
            m.loss.set(res.loss)
        m.rollouts.inc(row["rollouts"])
        m.tokens.inc(row["tokens"])
        m.zero_variance_groups.inc(row["zero_variance_groups"])
        m.rollouts_per_step.set(row["rollouts"])
        m.tokens_per_step.set(row["tokens"])
        m.max_n.set(row["max_n"])
        for n in ns:
            m.n_per_prompt.observe(n)
        for phase, secs in (("allocate", t_alloc), ("generate", t_gen), ("train", t_train),
                            ("weight_sync", t_sync)):  # fmt: skip
            m.phase_seconds.labels(phase).observe(secs)
        m.step_seconds.observe(step_s)
        self.status.step = self.step
        self.status.mean_reward = row["reward"]
        self.status.effective_rollout_ratio = row["effective_rollout_ratio"]

    # ---------------------------------------------------------------- the run
    def run(self) -> str:
        s = self.s
        c = self.control
        try:
            self.setup()
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
