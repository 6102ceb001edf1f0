"""The policy model factory: the tiny from-scratch model (character tokenizer, no download) with
a short supervised warm-up on the task's training split, or any local HF causal-LM folder.

The warm-up exists so that RL starts from a spread of success rates (short strings mostly right,
long ones mostly wrong) instead of from zero reward everywhere. Its result is cached by
(task, seed, steps, lr, shape) under the cache folder, so a second run starts at once."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from krl.common.errors import InvalidArgument
from krl.model.loading import check_model_dir, load_model, load_tokenizer
from krl.model.tiny import TinyShape, build_tiny_model
from krl.tasks.base import Task

log = logging.getLogger(__name__)
TINY = "tiny"


def sft_batch(tasks: Sequence[Task], tokenizer, pad_id: int) -> tuple[torch.Tensor, ...]:
    """Prompt + answer + eos per row; the loss mask covers answer and eos (next-token layout)."""
    eos = tokenizer.eos_token_id
    rows = []
    for t in tasks:
        p = tokenizer(t.prompt, add_special_tokens=False)["input_ids"]
        target = t.meta.get("target", t.answer)  # a scorer's reference is not the text to learn
        a = tokenizer(target, add_special_tokens=False)["input_ids"] + [eos]
        rows.append((p, a))
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width - 1))
    for i, (p, a) in enumerate(rows):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        attn[i, : len(p) + len(a)] = 1
        mask[i, len(p) - 1 : len(p) - 1 + len(a)] = 1
    return ids, attn, mask


def warm_up(
    model: torch.nn.Module,
    tokenizer,
    tasks: Sequence[Task],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Supervised next-token training on the answers; returns the loss of every step."""
    if not tasks:
        raise InvalidArgument("the task has no training prompts to warm up on", field="task")
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id or 0
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        ids, attn, mask = sft_batch(
            rng.sample(list(tasks), min(batch_size, len(tasks))), tokenizer, pad
        )
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        loss = -(logp * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return losses


def _key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare_policy(
    model: str,
    *,
    tasks: Sequence[Task],
    task_name: str,
    warmup_steps: int,
    warmup_lr: float,
    seed: int,
    cache_dir: Path,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """A local HF model folder for the run's starting policy.

    `tiny`: build the from-scratch model and warm it up (cached); a path: that folder, warmed up
    into the cache when warmup_steps > 0."""
    if model != TINY:
        src = check_model_dir(model)
        if warmup_steps == 0:
            return src
    key = _key(
        model=str(model),
        task=task_name,
        data=hashlib.sha256(
            "\n".join(f"{t.prompt}\t{t.meta.get('target', t.answer)}" for t in tasks).encode()
        ).hexdigest(),
        seed=seed,
        steps=warmup_steps,
        lr=warmup_lr,
        shape=TinyShape().__dict__ if model == TINY else None,
    )
    name = "tiny" if model == TINY else Path(model).name
    out = Path(cache_dir) / f"{name}-warm-{key}"
    if (out / "warmup.json").is_file():
        log.info("warm policy from cache: %s", out)
        return out
    # a folder of this warm-up's own: two runs warming up the same policy at once (parallel
    # experiments) must not write into one another's files
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp", dir=out.parent))
    if model == TINY:
        build_tiny_model(tmp, seed=seed)
    else:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    net = load_model(tmp)
    tok = load_tokenizer(tmp)
    t0 = time.monotonic()
    losses = warm_up(
        net, tok, tasks, steps=warmup_steps, lr=warmup_lr, seed=seed, progress=progress
    )
    net.save_pretrained(tmp)
    (tmp / "warmup.json").write_text(
        json.dumps(
            {
                "task": task_name,
                "steps": warmup_steps,
                "lr": warmup_lr,
                "seed": seed,
                "seconds": round(time.monotonic() - t0, 2),
                "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None,
            },
            indent=1,
        )
    )
    try:
        tmp.rename(out)
    except OSError:  # out exists: another run finished the same warm-up first, or a broken copy
        if (out / "warmup.json").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
    log.info(
        "warmed up the policy for %d steps in %.1fs (loss %.3f -> %.3f): %s",
        warmup_steps,
        time.monotonic() - t0,
        losses[0] if losses else 0,
        losses[-1] if losses else 0,
        out,
    )
    return out
