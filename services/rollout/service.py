"""The rollout use cases: validate a Generate request, spread it over the replicas, score each
finished group with its verifier and hand it on; swap weights between batches."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krl.clients.rollout import Completion, Group
from krl.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from krl.model.weights import check_against, from_bytes, shapes_in_files, shapes_of
from krl.rollout import planning, verifiers
from krl.rollout.engines.base import Sample, Sampling
from krl.rollout.gate import VersionGate
from krl.rollout.metrics import RolloutMetrics
from krl.rollout.replicas import ReplicaPool
from krl.rollout.scoring import ScoringPool
from krl.rollout.settings import RolloutSettings
from krl.tasks.reasoning_gym import check_reference


@dataclass(frozen=True)
class PromptIn:
    prompt_id: str
    n: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    answer: str = ""
    verifier: str = "exact"


@dataclass
class _Pending:
    prompt: PromptIn
    ids: tuple[int, ...]
    samples: list[Sample] = field(default_factory=list)


class Rollout:
    def __init__(
        self,
        pool: ReplicaPool,
        tokenizer: Any,
        settings: RolloutSettings,
        metrics: RolloutMetrics,
        scoring: ScoringPool,
    ) -> None:
        self.pool = pool
        self.scoring = scoring
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.settings = settings
        self.metrics = metrics
        self.version = 0
        self.gate = VersionGate()

    # -- Generate ---------------------------------------------------------------------------
    def check_sampling(self, sp: Sampling) -> Sampling:
        s = self.settings
        if not math.isfinite(sp.temperature) or sp.temperature < 0:
            raise InvalidArgument("must be a finite number >= 0", field="sampling.temperature")
        if not (math.isfinite(sp.top_p) and 0 <= sp.top_p <= 1):
            raise InvalidArgument("must be in (0, 1] (0: 1.0)", field="sampling.top_p")
        if sp.max_new_tokens < 0 or sp.max_new_tokens > s.max_new_tokens_cap:
            raise InvalidArgument(
                f"must be in [1, {s.max_new_tokens_cap}] (0: default)",
                field="sampling.max_new_tokens",
            )
        if len(sp.stop) > s.max_stop_strings:
            raise InvalidArgument(
                f"{len(sp.stop)} stop strings; the most is {s.max_stop_strings} (max_stop_strings)",
                field="sampling.stop",
            )
        for j, x in enumerate(sp.stop):
            if not 0 < len(x) <= s.max_stop_chars:
                raise InvalidArgument(
                    f"must be 1 to {s.max_stop_chars} characters (max_stop_chars)",
                    field=f"sampling.stop[{j}]",
                )
        return Sampling(
            temperature=sp.temperature,
            top_p=sp.top_p or 1.0,
            max_new_tokens=sp.max_new_tokens or s.default_max_new_tokens,
            stop=tuple(sp.stop),
            seed=sp.seed,
        )

    def check_token_count(self, index: int, count: int) -> None:
        """Token ids a prompt sends: at most the engine's context, checked before they are
        read (a 56 MB list took the event loop ~1 s to copy and range-check)."""
        context = self.pool.info.max_context_tokens
        if count > context:
            raise InvalidArgument(
                f"{count} token ids; the engine's context is {context}",
                field=f"prompts[{index}].token_ids",
            )

    def check_prompts(self, prompts: list[PromptIn], sp: Sampling) -> list[tuple[int, ...]]:
        s = self.settings
        if not prompts:
            raise InvalidArgument("no prompts", field="prompts")
        if len(prompts) > s.max_prompts:
            raise InvalidArgument(
                f"{len(prompts)} prompts; the most is {s.max_prompts} (max_prompts)",
                field="prompts",
            )
        context = self.pool.info.max_context_tokens
        out = []
        for i, p in enumerate(prompts):
            where = f"prompts[{i}]"
            if not p.prompt_id:
                raise InvalidArgument("empty prompt id", field=f"{where}.prompt_id")
            if p.n < 0 or p.n > s.max_n:
                raise InvalidArgument(f"{p.n} is outside [0, {s.max_n}]", field=f"{where}.n")
            if p.verifier not in verifiers.VERIFIERS and p.verifier != "":
                raise InvalidArgument(
                    f"unknown verifier {p.verifier!r} (known: {', '.join(verifiers.VERIFIERS)})",
                    field=f"{where}.verifier",
                )
            if p.text and p.token_ids:
                raise InvalidArgument("give text or token_ids, not both", field=where)
            self.check_token_count(i, len(p.token_ids))
            if len(p.text) > s.max_prompt_chars:
                raise InvalidArgument(
                    f"{len(p.text)} characters; the most is {s.max_prompt_chars} (max_prompt_chars)",
                    field=f"{where}.text",
                )
            if len(p.answer) > s.max_answer_chars:
                raise InvalidArgument(
                    f"{len(p.answer)} characters; the most is {s.max_answer_chars} "
                    "(max_answer_chars)",
                    field=f"{where}.answer",
                )
            if p.verifier == "reasoning_gym":
                try:
                    check_reference(p.answer, s.max_reference_size)
                except InvalidArgument as e:
                    raise InvalidArgument(e.message, field=f"{where}.answer") from None
            ids = tuple(p.token_ids) if p.token_ids else tuple(self._encode(p.text))
            if not ids:
                raise InvalidArgument("empty prompt", field=f"{where}.text")
            if p.token_ids and not all(0 <= t < self.vocab_size for t in ids):
                bad = next(t for t in ids if not 0 <= t < self.vocab_size)
                raise InvalidArgument(  # not an engine failure: a retry would fail the same way
                    f"token id {bad} is outside the tokenizer's [0, {self.vocab_size})",
                    field=f"{where}.token_ids",
                )
            if len(ids) + sp.max_new_tokens > context:
                raise InvalidArgument(
                    f"prompt is {len(ids)} tokens; with max_new_tokens {sp.max_new_tokens} it "
                    f"exceeds the engine's context of {context}",
                    field=f"{where}.text",
                )
            out.append(ids)
        return out

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    async def generate(
        self, prompts: list[PromptIn], sampling: Sampling, min_policy_version: int = 0
    ) -> AsyncIterator[Group]:
        sp = self.check_sampling(sampling)
        ids = self.check_prompts(prompts, sp)
        t0 = time.perf_counter()
        m = self.metrics
        m.requests_in_flight.inc()
        pending = {i: _Pending(p, x) for i, (p, x) in enumerate(zip(prompts, ids, strict=True))}
        m.queue_prompts.inc(len(pending))
        try:
            async with self.gate.batch():
                if self.version < min_policy_version:
                    raise FailedPrecondition(
                        f"serving policy version {self.version}, older than the "
                        f"{min_policy_version} asked for",
                        field="min_policy_version",
                    )
                version = self.version
                for i in [i for i, p in pending.items() if p.prompt.n == 0]:
                    yield await self._finish(i, pending.pop(i), version, t0)
                parts = planning.split(
                    [
                        (pending[i].ids, pending[i].prompt.n) if i in pending else ((), 0)
                        for i in range(len(prompts))
                    ],
                    len(self.pool.replicas),
                    sp.max_new_tokens,
                )
                try:
                    async with contextlib.aclosing(self.pool.generate(parts, sp)) as groups:
                        async for (i, _part), samples in groups:
                            pend = pending[i]
                            pend.samples.extend(samples)
                            if len(pend.samples) == pend.prompt.n:
                                yield await self._finish(i, pending.pop(i), version, t0)
                    if pending:  # an engine must never end a batch with groups missing
                        lost = [pending[i].prompt.prompt_id for i in sorted(pending)[:5]]
                        raise Unavailable(f"the engine returned no group for {lost} ...")
                except Exception:
                    m.engine_errors.inc()
                    raise
        finally:
            m.requests_in_flight.dec()
            m.queue_prompts.dec(len(pending))

    async def _finish(self, index: int, pend: _Pending, version: int, t0: float) -> Group:
        p, m = pend.prompt, self.metrics
        texts = [self.tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in pend.samples]
        if verifiers.cheap(p.verifier, p.answer, texts):  # microseconds: no worker round trip
            rewards = verifiers.score_group(p.verifier, p.answer, texts)
        else:
            rewards = await self.scoring.run(p.verifier, p.answer, texts)
        out = []
        for s, text, reward in zip(pend.samples, texts, rewards, strict=True):
            out.append(
                Completion(
                    text,
                    s.token_ids,
                    s.logprobs,
                    reward,
                    reward >= self.settings.success_threshold,
                    s.finish,
                )
            )
            m.tokens.inc(len(s.token_ids))
            m.completions.labels(s.finish).inc()
            m.reward.observe(reward)
        m.queue_prompts.dec()
        m.groups.inc()
        latency = time.perf_counter() - t0
        m.group_seconds.observe(latency)
        return Group(p.prompt_id, index, out, version, latency, list(pend.ids))

    # -- UpdateWeights ----------------------------------------------------------------------
    def confine(self, path: str) -> Path:
        """A checkpoint path inside checkpoint_root, or a refusal that reveals nothing about
        files outside it."""
        root = self.settings.checkpoint_root
        if root is None:
            raise FailedPrecondition(
                "checkpoint_path pushes are off on this service (set checkpoint_root); "
                "send the weights inline",
                field="header.checkpoint_path",
            )
        root = root.resolve()
        full = (root / path).resolve()
        if not full.is_relative_to(root):
            raise InvalidArgument(
                f"must be inside the checkpoint root {root}", field="header.checkpoint_path"
            )
        return full

    async def update_weights(
        self, version: int, payload: bytes | None, checkpoint_path: str | None
    ) -> tuple[int, float]:
        if version <= 0:
            raise InvalidArgument("must be > 0", field="header.version")
        if (payload is None) == (checkpoint_path is None):
            raise InvalidArgument(
                "give inline weights or a checkpoint_path, not both or neither", field="header"
            )
        if self.pool.spec is None:
            raise FailedPrecondition(
                f"the {self.pool.info.engine} engine does not take weight updates; update the "
                "server it fronts instead"
            )
        # Names and shapes are checked before anything is swapped.
        if payload is not None:
            check_against(shapes_of(from_bytes(payload)), self.pool.spec)
        else:
            checkpoint_path = str(self.confine(checkpoint_path))
            check_against(shapes_in_files(Path(checkpoint_path)), self.pool.spec)
        async with self.gate.swap():
            if version == self.version:
                return self.version, 0.0  # a retried push: already serving it
            if version < self.version:
                raise FailedPrecondition(
                    f"version {version} is older than the {self.version} being served",
                    field="header.version",
                )
            kind, data = ("bytes", payload) if payload is not None else ("path", checkpoint_path)
            load_s = await self.pool.load(kind, data)
            self.version = version
        self.metrics.policy_version.set(version)
        self.metrics.weight_load_seconds.observe(load_s)
        return version, load_s
