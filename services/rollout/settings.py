"""Rollout settings (env prefix KRL_ROLLOUT_; nested engine fields with __, e.g.
KRL_ROLLOUT_ENGINE__TYPE=vllm KRL_ROLLOUT_ENGINE__MODEL=/models/qwen)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from krl.common.config import ServiceSettings
from krl.rollout.engines.config import DEFAULT_MODEL, EngineConfig, HfEngineConfig

__all__ = ["DEFAULT_MODEL", "RolloutSettings"]


class RolloutSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="KRL_ROLLOUT_", env_nested_delimiter="__", extra="forbid"
    )

    grpc_port: int = Field(50052, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    http_port: int = Field(8001, ge=0, le=65535, description="HTTP port: /metrics, /healthz.")
    engine: EngineConfig = Field(
        default_factory=lambda: HfEngineConfig(model=DEFAULT_MODEL),
        description="Engine: {type = 'hf' | 'vllm' | 'openai', ...}. Default: hf on the tiny "
        "model in .krl/models/tiny (built there if missing).",
    )
    replicas: int = Field(1, ge=1, le=64, description="Engine replicas (worker processes).")
    threads_per_replica: int = Field(
        0, ge=0, description="torch threads per replica (0: CPU cores / replicas)."
    )
    max_n: int = Field(512, ge=1, description="Largest n for one prompt.")
    max_prompts: int = Field(4096, ge=1, description="Most prompts in one Generate call.")
    max_new_tokens_cap: int = Field(4096, ge=1, description="Largest max_new_tokens accepted.")
    default_max_new_tokens: int = Field(64, ge=1, description="max_new_tokens when unset (0).")
    max_stop_strings: int = Field(
        16, ge=0, description="Most stop strings in one Generate call (each is checked per token)."
    )
    max_stop_chars: int = Field(256, ge=1, description="Longest stop string accepted.")
    max_prompt_chars: int = Field(
        262_144, ge=1, description="Longest prompt text accepted (checked before tokenizing)."
    )
    max_answer_chars: int = Field(
        4096,
        ge=1,
        description="Longest reference answer accepted (verification cost grows with it).",
    )
    max_reference_size: int = Field(
        100_000,
        ge=1,
        le=100_000,
        description="Largest dataset size a reasoning_gym answer may name (some datasets are "
        "built whole to score one entry); references are checked before generating.",
    )
    verify_workers: int = Field(
        1, ge=1, le=64, description="Worker processes that score completions, off the event loop."
    )
    verify_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest one group's verification may take; its workers are then "
        "replaced and the call fails with DEADLINE_EXCEEDED.",
    )
    success_threshold: float = Field(
        0.5, ge=0, le=1, description="A completion succeeds when its reward is at least this."
    )
    max_weights_bytes: int = Field(
        4 << 30, ge=1024, description="Largest inline weight payload (use a checkpoint path above)."
    )
    checkpoint_root: Path | None = Field(
        None,
        description="Folder a checkpoint_path weight push must resolve inside (symlinks "
        "followed; relative paths are taken from it). Unset: checkpoint_path pushes are refused.",
    )
    start_timeout_s: float = Field(600.0, gt=0, description="Time an engine replica has to start.")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="gRPC message limit.")
