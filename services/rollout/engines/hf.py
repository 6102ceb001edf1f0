"""HF transformers `generate` on CPU (or any torch device): batched, seeded sampling, logprobs.
The embedded default; works with the tiny model and any local causal-LM folder."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from transformers import GenerationConfig

from krl.model.loading import load_model, load_tokenizer
from krl.model.weights import WeightSpec, check_against, shapes_of, spec_of
from krl.rollout.engines.base import Engine, EngineInfo, GenItem, Sample, Sampling

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HfEngine(Engine):
    def __init__(
        self, model: Path, *, dtype: str = "float32", max_batch_rows: int = 256, device: str = "cpu"
    ) -> None:
        self.path = Path(model)
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(self.path)
        self.model = load_model(self.path, DTYPES[dtype]).to(self.device)
        self.max_batch_rows = max_batch_rows
        self._spec = spec_of(self.model)
        cfg = self.model.config
        self.max_context = int(getattr(cfg, "max_position_embeddings", 2048))
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        return [ids] if isinstance(ids, int) else list(ids)

    def info(self) -> EngineInfo:
        return EngineInfo("hf", str(self.path), self.max_context)

    def weight_spec(self) -> WeightSpec:
        return self._spec

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        check_against(shapes_of(state), self._spec)
        with torch.no_grad():
            own = self.model.state_dict()
            for name, t in state.items():
                own[name].copy_(t.to(own[name].dtype))

    def generate(
        self, items: list[GenItem], sampling: Sampling
    ) -> Iterator[tuple[tuple[int, int], list[Sample]]]:
        # Rows are (item, copy); similar prompt lengths share a chunk to limit padding. A group
        # is yielded as soon as its last row is done.
        order = sorted(items, key=lambda it: len(it.prompt_ids))
        rows = [(it, j) for it in order for j in range(it.n)]
        done: dict[tuple[int, int], list[Sample]] = {it.key: [] for it in items}
        for c, start in enumerate(range(0, len(rows), self.max_batch_rows)):
            if self.cancelled():
                return
            chunk = rows[start : start + self.max_batch_rows]
            seed = None if sampling.seed is None else sampling.seed * 1_000_003 + c
            samples = self._generate_rows([it.prompt_ids for it, _ in chunk], sampling, seed)
            finished: list[GenItem] = []
            for (it, _), s in zip(chunk, samples, strict=True):
                done[it.key].append(s)
                if len(done[it.key]) == it.n:
                    finished.append(it)
            for it in finished:
                yield it.key, done.pop(it.key)

    @torch.no_grad()
    def _generate_rows(
        self, prompts: list[tuple[int, ...]], sp: Sampling, seed: int | None
    ) -> list[Sample]:
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        greedy = sp.temperature <= 0
        gen_cfg = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else sp.temperature,
            top_p=None if greedy else sp.top_p,
            top_k=None if greedy else 0,
            max_new_tokens=sp.max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=pad,
            stop_strings=list(sp.stop) or None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        if seed is not None:
            torch.manual_seed(seed)
        else:
            torch.manual_seed(time.time_ns() % (1 << 62))
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            generation_config=gen_cfg,
            tokenizer=self.tokenizer if sp.stop else None,
        )
        new = out.sequences[:, width:].cpu()
        logits = torch.stack(out.logits, dim=1).float().cpu()  # rows x steps x vocab
        scale = 1.0 if greedy else sp.temperature
        lp = torch.log_softmax(logits / scale, dim=-1)
        taken = lp.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        return [self._sample(new[i].tolist(), taken[i].tolist(), sp) for i in range(len(prompts))]

    def _sample(self, tokens: list[int], logprobs: list[float], sp: Sampling) -> Sample:
        for t, tok in enumerate(tokens):
            if tok in self.eos_ids:
                return Sample(tokens[: t + 1], logprobs[: t + 1], "stop")
        if sp.stop:
            text = ""
            for t, tok in enumerate(tokens):
                text += self.tokenizer.decode([tok])
                if any(s in text for s in sp.stop):
                    return Sample(tokens[: t + 1], logprobs[: t + 1], "stop")
        return Sample(tokens, logprobs, "length")
