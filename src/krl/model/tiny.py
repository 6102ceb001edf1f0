"""The tiny Qwen-style causal LM built from scratch: small enough to train on 2 CPU cores,
shaped like a real model (GQA, RoPE, RMSNorm, SwiGLU, QK-norm) so HF transformers and vLLM both
run it.

It is a Qwen3 architecture (Qwen2 plus QK-norm) rather than Qwen2 because transformers 5 forces
its byte-level Qwen2Tokenizer on any `qwen2` folder, which would mangle the character tokenizer
(spaces and newlines vanish); `qwen3` folders keep the tokenizer they ship."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM
from transformers.utils import logging as hf_logging

from krl.model.tokenizer import save_char_tokenizer


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 2  # head_dim 64: a size every vLLM attention backend supports
    num_key_value_heads: int = 1
    intermediate_size: int = 384
    max_position_embeddings: int = 256
    initializer_range: float = 0.02


def tiny_config(vocab_size: int, shape: TinyShape, *, bos: int, eos: int, pad: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        torch_dtype="float32",
        head_dim=shape.hidden_size // shape.num_attention_heads,
        **asdict(shape),
    )


def build_tiny_model(folder: Path, shape: TinyShape | None = None, seed: int = 0) -> Path:
    """Write a freshly initialised tiny model and its tokenizer to `folder` (a normal HF model
    folder: config.json, model.safetensors, tokenizer files). Deterministic for a seed."""
    hf_logging.disable_progress_bar()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = save_char_tokenizer(folder)
    cfg = tiny_config(
        len(tok),
        shape or TinyShape(),
        bos=tok.bos_token_id,
        eos=tok.eos_token_id,
        pad=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder
