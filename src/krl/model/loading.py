"""Load a policy (model + tokenizer) from a local HF causal-LM folder. Never downloads."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from krl.common.errors import InvalidArgument

os.environ.setdefault("HF_HUB_OFFLINE", "1")
hf_logging.disable_progress_bar()


def check_model_dir(path: Path | str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise InvalidArgument(f"{p} is not a local HF model folder (no config.json)", field="model")
    return p


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(check_model_dir(path)), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path | str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(
        str(check_model_dir(path)), dtype=dtype, local_files_only=True
    )
    model.eval()
    return model
