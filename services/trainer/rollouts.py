"""The trainer's rollouts in the step (krl.rl.step): completions of the policy from the rollout
service, one group per prompt, scored by its verifier (with --reward success the loss sees
each completion's success, 1 or 0, instead of its score)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from krl.clients.rollout import Group, PromptSpec
from krl.tasks.base import Task
from krl_client.messages import Outcome
from krl_client.session import informative


class PolicyRollouts:
    """`generate` is the trainer's (its rollout fleet at the current policy version); the
    sampling settings are the run's."""

    def __init__(
        self,
        generate: Callable[..., dict[str, Group]],
        task: Callable[[str], Task],
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        reward: str = "score",
    ) -> None:
        self._generate = generate
        self._task = task
        self.sampling = {
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
        }
        self.reward = reward

    def generate(self, ids: list[str], n: Mapping[str, int], seed: int) -> dict[str, Group]:
        specs = []
        for pid in ids:
            if n[pid] > 0:
                t = self._task(pid)
                specs.append(
                    PromptSpec(pid, n[pid], text=t.prompt, answer=t.answer, verifier=t.verifier)
                )
        groups = self._generate(specs, seed=seed, **self.sampling)
        if self.reward == "success":
            groups = {pid: binary(gr) for pid, gr in groups.items()}
        return groups

    def outcome(self, group: Group) -> Outcome:
        return Outcome(
            group.prompt_id,
            sum(c.success for c in group.completions),
            len(group.completions),
            sum(len(c.token_ids) for c in group.completions),
        )

    def informative(self, group: Group) -> bool:
        return informative([c.reward for c in group.completions])

    def merge(self, probe: Group, topup: Group) -> Group:
        return replace(probe, completions=probe.completions + topup.completions)


def binary(gr: Group) -> Group:
    """The group with each reward replaced by its success (1 or 0)."""
    return replace(gr, completions=[replace(c, reward=float(c.success)) for c in gr.completions])
