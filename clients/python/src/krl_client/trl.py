"""Per-prompt group sizes from the allocator in TRL's GRPOTrainer (trl 1.16), without copying it.

TRL groups rewards with `view(-1, num_generations)`: every group has num_generations rows. Two of
its hooks make the groups variable anyway. Its experimental `rollout_func` generates the rows, so
for a prompt allotted n <= num_generations rollouts this module generates only n real
completions and fills the group with num_generations - n one-token pads; and TRL leaves a row
out of its group's mean and std, and gives it advantage 0, when every reward function returns
None for it, which the wrapped reward functions do for the pads. `knap.drop_pads(trainer)` then
takes the pads out of the batch after the advantages are computed and before any forward pass
of the loss, with TRL's token count for its `dapo` normaliser recounted over the real rows (its
other loss types normalise per micro-batch): a pad costs no training compute. With
steps_per_generation > 1 a few pads stay (fewer than steps_per_generation), so TRL can split the
batch evenly. drop_pads wraps one private method of GRPOTrainer and is tested on trl 1.16 only;
other versions are refused with a clear message.

    from krl_client import AllocatorClient, AllocationSession
    from krl_client.trl import KnapsackGRPO

    session = AllocationSession(AllocatorClient("127.0.0.1:50051", "my-run"),
                                budget_per_prompt=8, min_n=2, max_n=16, journal="out/alloc.jsonl")
    knap = KnapsackGRPO(session, [my_reward], num_generations=16)
    trainer = GRPOTrainer(model, reward_funcs=knap.reward_funcs, args=GRPOConfig(num_generations=16, ...),
                          train_dataset=ds, rollout_func=knap.rollout_func)
    knap.drop_pads(trainer)

max_n must be at most num_generations (the group's width). A prompt's id is the blake2b of its
text (or messages) unless `prompt_id` maps a prompt to one. Generation goes through TRL's own
`_generate_single_turn` (transformers, or vLLM): with TRL's vLLM server mode, one call per
distinct n, each prompt's rows contiguous, so the server gets each prompt once with its own n.
One process only (each accelerate process would allocate its own slice). Imports nothing from
trl or torch but in drop_pads: the trainer is used through the calls above."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from krl_client.session import AllocationSession, StepPlan

PAD = "krl_pad"
PROMPT_ID = "krl_prompt_id"
LOSS_AGG_OF_TRL = {
    "grpo": "seq-mean-token-mean",
    "dr_grpo": "seq-mean-token-sum",
    "bnpo": "token-mean",
    "dapo": "token-mean",
}
"""How each of TRL's loss_types weighs rollouts, in our names: grpo averages each sequence's
tokens then the sequences, dr_grpo sums tokens over a constant, bnpo and dapo average all tokens.
Declared to the allocator at the first generation unless the session declares one itself."""


def text_id(prompt: Any) -> str:
    raw = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class _HidePadWarnings(logging.Filter):
    """TRL warns once per step that every reward function returned None for a row: for our pads
    that is the point, so those warnings (and only those) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"'{PAD}': True" not in record.getMessage()


class KnapsackGRPO:
    def __init__(
        self,
        session: AllocationSession,
        reward_funcs: Sequence[Callable[..., list[float | None]]],
        *,
        num_generations: int,
        prompt_id: Callable[[Any], str] = text_id,
        report_reward: int = 0,
        group_by_n: bool | None = None,
    ) -> None:
        """report_reward: which reward function's rewards are reported (success = reward >=
        the session's success_threshold). group_by_n: one generation call per distinct n
        (None: when TRL generates with its vLLM server)."""
        if session.max_n > num_generations:
            raise ValueError(
                f"the session's max_n {session.max_n} is over num_generations {num_generations}: "
                "TRL's groups are num_generations wide"
            )
        self.session = session
        self.num_generations = num_generations
        self.prompt_id = prompt_id
        self.report_reward = report_reward
        self.group_by_n = group_by_n
        self.plans: list[StepPlan] = []
        self._round: tuple[int, int] = (-1, 0)
        self.reward_funcs = [self._wrap(f, i) for i, f in enumerate(reward_funcs)]
        self.last_metrics: dict[str, float] = {}
        self.pads: list[list[bool]] = []
        """Per generation round, which rows were pads (for inspection and tests)."""
        logging.getLogger("trl.trainer.grpo_trainer").addFilter(_HidePadWarnings())

    # -- generation ----------------------------------------------------------------------------
    def _step_key(self, trainer: Any) -> int:
        """One key per generation round: (optimizer step, round within it), stable on resume."""
        step = int(trainer.state.global_step)
        k = self._round[1] + 1 if self._round[0] == step else 0
        self._round = (step, k)
        args = trainer.args
        per_step = max(1, math.ceil(args.gradient_accumulation_steps / args.steps_per_generation))
        return step * per_step + k + 1

    def rollout_func(self, prompts: list, trainer: Any) -> dict[str, list]:
        g = self.num_generations
        if len(prompts) % g:
            raise ValueError(f"{len(prompts)} prompts is not a multiple of num_generations {g}")
        firsts = prompts[::g]
        ids = _unique([self.prompt_id(p) for p in firsts])
        if self.session.loss_agg is None:
            self.session.loss_agg = LOSS_AGG_OF_TRL.get(getattr(trainer.args, "loss_type", ""))
        plan = self.session.allocate(self._step_key(trainer), ids)
        self.plans.append(plan)
        prompt_ids = trainer._tokenize_prompts(prompts)[0]
        real = [i * g + j for i, pid in enumerate(ids) for j in range(plan.n[pid])]
        completions, logprobs = self._generate(trainer, prompt_ids, real, [plan.n[p] for p in ids])
        eos = trainer.processing_class.eos_token_id
        out_ids: list[list[int]] = [[eos] for _ in prompts]
        out_lp: list[list[float]] | None = None if logprobs is None else [[0.0] for _ in prompts]
        for r in real:
            out_ids[r] = list(completions[r])
            if out_lp is not None:
                out_lp[r] = list(logprobs[r])
        real_set = set(real)
        self.pads.append([i not in real_set for i in range(len(prompts))])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": out_ids,
            "logprobs": out_lp,
            PAD: list(self.pads[-1]),
            PROMPT_ID: [ids[i // g] for i in range(len(prompts))],
        }

    def _generate(self, trainer: Any, prompt_ids: list, real: list[int], n: list[int]):
        """Completions (and logprobs, or None) of the real rows, by row. One call of TRL's
        generation for all of them, or, when grouped (TRL's vLLM server mode, or group_by_n),
        one call per distinct n with each prompt's n rows contiguous: the server mode sends
        rows[::n] with n completions each, so every prompt is one vLLM request with its own n."""
        group = self.group_by_n
        if group is None:
            args = trainer.args
            group = bool(getattr(args, "use_vllm", False)) and args.vllm_mode == "server"
        g = self.num_generations
        calls = [(1, real)]
        if group:
            calls = [(k, [r for r in real if n[r // g] == k]) for k in sorted(set(n)) if k > 0]
        comp: dict[int, list] = {}
        lps: dict[int, list] | None = {}
        for k, rows in calls:
            c, lp = trainer._generate_single_turn([prompt_ids[r] for r in rows], None, {}, k)
            comp.update(zip(rows, c, strict=True))
            if lp is None:
                lps = None
            elif lps is not None:
                lps.update(zip(rows, lp, strict=True))
        return comp, lps

    # -- no pads in training ------------------------------------------------------------------
    TESTED_TRL = ("1.16.",)

    def drop_pads(self, trainer: Any, *, balance_prompts: bool = False) -> Any:
        """Take the pad rows out of every generation batch before the loss (see the module).

        balance_prompts: scale each prompt's advantages by (mean n) / (its n), so that under
        TRL's row- and token-averaged losses a prompt weighs about what it would with a uniform
        group, whatever its n (more rollouts then buy a less noisy estimate, not a larger share
        of the update); the allocator is told the loss is prompt-mean."""
        import trl

        if not trl.__version__.startswith(self.TESTED_TRL):
            raise RuntimeError(
                f"drop_pads is tested on trl {', '.join(v + '*' for v in self.TESTED_TRL)}; this "
                f"is trl {trl.__version__} (run without drop_pads: pads then cost a training row)"
            )
        generate = trainer._generate_and_score_completions
        self.rows_in_loss: list[int] = []
        if balance_prompts:
            self.session.loss_agg = "prompt-mean"

        def generate_without_pads(inputs: Any) -> dict:
            out = generate(inputs)
            if trainer.model.training and self.pads:
                if balance_prompts:
                    self._balance(out, self.pads[-1])
                out = self._without_pads(trainer, out, self.pads[-1])
                self.rows_in_loss.append(int(out["completion_ids"].shape[0]))
            return out

        trainer._generate_and_score_completions = generate_without_pads
        return trainer

    def _balance(self, out: dict, pads: list[bool]) -> None:
        """Advantages of prompt k's rows (rows k*G .. k*G+G-1, in TRL's order before its
        shuffle) times (mean n) / n_k."""
        g = self.num_generations
        n = [g - sum(pads[k : k + g]) for k in range(0, len(pads), g)]
        mean = sum(n) / max(1, sum(1 for x in n if x > 0))
        scale = [mean / x if x > 0 else 0.0 for x in n for _ in range(g)]
        adv = out["advantages"]
        out["advantages"] = adv * adv.new_tensor(scale).reshape(-1, *([1] * (adv.ndim - 1)))

    @staticmethod
    def _without_pads(trainer: Any, out: dict, pads: list[bool]) -> dict:
        rows = len(pads)
        chunks = max(1, int(trainer.args.steps_per_generation))
        keep = [i for i, p in enumerate(pads) if not p]
        spare = [i for i, p in enumerate(pads) if p]
        keep = sorted(keep + spare[: (-len(keep)) % chunks])  # an even split needs these
        if len(keep) == rows:
            return out
        index = out["completion_ids"].new_tensor(keep)
        new: dict = {}
        for k, v in out.items():
            if hasattr(v, "ndim") and v.ndim > 0:
                if v.shape[0] != rows:
                    raise RuntimeError(f"drop_pads: batch field {k!r} is not one row per rollout")
                new[k] = v.index_select(0, index)
            elif isinstance(v, list) and len(v) == rows:
                new[k] = [v[i] for i in keep]
            else:
                new[k] = v
        mask = new["completion_mask"]
        if new.get("tool_mask") is not None:
            mask = mask * new["tool_mask"]
        new["num_items_in_batch"] = trainer.accelerator.gather(mask.sum()).sum()
        return new

    # -- rewards and the report ----------------------------------------------------------------
    def _wrap(self, fn: Callable[..., list[float | None]], index: int):
        def reward(prompts, completions, **kw) -> list[float | None]:
            pad, pids = kw.pop(PAD), kw.pop(PROMPT_ID)
            real = [i for i, p in enumerate(pad) if not p]
            sub_kw = {k: _take(v, real, len(pad)) for k, v in kw.items()}
            got = fn(
                prompts=[prompts[i] for i in real],
                completions=[completions[i] for i in real],
                **sub_kw,
            )
            out: list[float | None] = [None] * len(pad)
            for i, r in zip(real, got, strict=True):
                out[i] = r
            if index == self.report_reward and self.plans:
                self._report(self.plans[-1], [pids[i] for i in real], got)
            return out

        reward.__name__ = getattr(fn, "__name__", f"reward_{index}")
        return reward

    def _report(self, plan: StepPlan, pids: list[str], rewards: list[float | None]) -> None:
        by_pid: dict[str, list[float]] = {pid: [] for pid in plan.n}
        for pid, r in zip(pids, rewards, strict=True):
            if r is not None:
                by_pid[pid].append(float(r))
        self.session.report(plan, by_pid)
        self.last_metrics = self.session.metrics(plan, by_pid)


def _unique(ids: list[str]) -> list[str]:
    """A prompt drawn twice into one batch gets '#2', '#3' ... on its later copies (the
    allocator needs unique ids per batch)."""
    seen: dict[str, int] = {}
    out = []
    for pid in ids:
        seen[pid] = seen.get(pid, 0) + 1
        out.append(pid if seen[pid] == 1 else f"{pid}#{seen[pid]}")
    return out


def _take(v: Any, rows: list[int], width: int) -> Any:
    """A per-row column reduced to the real rows; anything else as it is."""
    if isinstance(v, list) and len(v) == width:
        return [v[i] for i in rows]
    return v
