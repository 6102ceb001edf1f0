"""Typed settings shared by every service: defaults < TOML file < environment < CLI.

Each service subclasses ServiceSettings with its own env prefix; `load_settings` resolves the
layers once, in main(), and the result is passed down (never read from globals)."""

from __future__ import annotations

import ipaddress
import json
import logging
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

log = logging.getLogger(__name__)

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    """Settings every network service has."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to bind; loopback unless told otherwise.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    auth_token: SecretStr | None = Field(
        None, description="Bearer token required on the APIs (health and metrics stay open)."
    )
    auth_token_file: Path | None = Field(None, description="Read the bearer token from this file.")
    log_level: str = Field("INFO", description="Python logging level.")
    grace_s: float = Field(5.0, ge=0, description="Seconds in-flight calls get on shutdown.")

    @field_validator("host")
    @classmethod
    def _host_is_an_address(cls, v: str) -> str:
        if v != "localhost":
            ipaddress.ip_address(v)  # raises ValueError with a precise message
        return v

    def token(self) -> str | None:
        """The bearer token, from auth_token or auth_token_file (never logged)."""
        return secret(self.auth_token, self.auth_token_file)

    def public_dict(self) -> dict[str, Any]:
        """The resolved settings with secrets masked, for the start-up log line."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


def secret(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given inline or in a file (inline wins); None when neither or empty."""
    if value is not None:
        return value.get_secret_value() or None
    if file is not None:
        return file.read_text().strip() or None
    return None


def load_settings(cls: type[S], config_file: Path | None, overrides: dict[str, Any]) -> S:
    """Resolve settings: defaults < TOML (or .json) file < environment < CLI overrides (None = not given)."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        text = config_file.read_text()
        file_values = json.loads(text) if config_file.suffix == ".json" else tomllib.loads(text)
    # The environment's raw values, validated only once merged with the other layers (an
    # environment may give part of a nested table that a flag completes).
    explicit_env = EnvSettingsSource(cls)()
    cli = {k: v for k, v in overrides.items() if v is not None}
    return cls.model_validate(_merge(_merge(file_values, explicit_env), cli))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, table by table (a nested [engine] table is merged, not replaced)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
