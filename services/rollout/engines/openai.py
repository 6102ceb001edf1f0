"""Any OpenAI-compatible completions server (`vllm serve`, SGLang): n per prompt via the API,
logprobs of the sampled tokens. Weight updates are refused: update the server itself.

Prompts go as token ids; completions come back as token ids when the server supports vLLM's
`return_tokens_as_token_ids` (otherwise the text is re-tokenized locally). For logprobs equal to
the hf and vllm engines' (temperature-scaled), start vLLM with --logprobs-mode processed_logprobs."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx

from krl.common.errors import InvalidArgument, Unavailable
from krl.model.loading import load_tokenizer
from krl.rollout.engines.base import Engine, EngineInfo, GenItem, Sample, Sampling
from krl.rollout.engines.config import OpenAIEngineConfig


class OpenAIEngine(Engine):
    def __init__(self, cfg: OpenAIEngineConfig) -> None:
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        headers = (
            {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else {}
        )
        self.http = httpx.Client(
            base_url=cfg.base_url.rstrip("/"), headers=headers, timeout=cfg.timeout_s
        )
        self.pool = ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix="krl-openai")

    def info(self) -> EngineInfo:
        return EngineInfo(
            "openai", f"{self.cfg.model} @ {self.cfg.base_url}", self.cfg.max_context_tokens
        )

    def generate(
        self, items: list[GenItem], sampling: Sampling
    ) -> Iterator[tuple[tuple[int, int], list[Sample]]]:
        futures = {self.pool.submit(self._one, it, sampling): it.key for it in items}
        try:
            pending = set(futures)
            while pending and not self.cancelled():
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    yield futures[f], f.result()
        finally:
            for f in futures:
                f.cancel()

    def _one(self, it: GenItem, sp: Sampling) -> list[Sample]:
        greedy = sp.temperature <= 0
        body = {
            "model": self.cfg.model,
            "prompt": list(it.prompt_ids),
            "n": 1 if greedy else it.n,
            "temperature": max(sp.temperature, 0.0),
            "top_p": sp.top_p,
            "max_tokens": sp.max_new_tokens,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        }
        if sp.stop:
            body["stop"] = list(sp.stop)
        if sp.seed is not None:
            body["seed"] = sp.seed + hash(it.key) % 100_003
        try:
            r = self.http.post("/completions", json=body)
        except httpx.HTTPError as e:
            raise Unavailable(f"completions server at {self.cfg.base_url}: {e}") from None
        if r.status_code == 400:
            raise InvalidArgument(f"completions server refused the request: {r.text[:300]}")
        if r.status_code >= 300:
            raise Unavailable(f"completions server answered {r.status_code}: {r.text[:300]}")
        choices = sorted(r.json()["choices"], key=lambda c: c["index"])
        samples = [self._sample(c) for c in choices]
        return samples * it.n if greedy else samples

    def _sample(self, c: dict) -> Sample:
        lp = c.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        if tokens and all(t.startswith("token_id:") for t in tokens):
            ids = [int(t.split(":", 1)[1]) for t in tokens]
            lps = [float(x) if x is not None else float("nan") for x in lp["token_logprobs"]]
        else:  # a server without token ids: re-tokenize the text, no logprobs
            ids = self.tokenizer(c["text"], add_special_tokens=False)["input_ids"]
            lps = [float("nan")] * len(ids)
        return Sample(ids, lps, "length" if c.get("finish_reason") == "length" else "stop")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()
