from pathlib import Path

import pytest
from pydantic import ValidationError

from krl.allocator.settings import AllocatorSettings
from krl.common.config import load_settings


def test_layers_defaults_file_env_cli(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "a.toml"
    cfg.write_text("http_port = 9001\ngrpc_port = 9002\nhalf_life_steps = 5.0\n")
    monkeypatch.setenv("KRL_ALLOCATOR_GRPC_PORT", "9100")
    s = load_settings(AllocatorSettings, cfg, {"half_life_steps": 7.0, "host": None})
    assert (s.http_port, s.grpc_port, s.half_life_steps, s.host) == (9001, 9100, 7.0, "127.0.0.1")


def test_unknown_keys_and_bad_hosts_are_refused(tmp_path: Path):
    cfg = tmp_path / "a.toml"
    cfg.write_text("grpc_prot = 1\n")
    with pytest.raises(ValidationError, match="grpc_prot"):
        load_settings(AllocatorSettings, cfg, {})
    with pytest.raises(ValidationError, match="host"):
        load_settings(AllocatorSettings, None, {"host": "not-an-ip"})


def test_the_token_never_shows_in_the_logged_settings(monkeypatch):
    monkeypatch.setenv("KRL_ALLOCATOR_AUTH_TOKEN", "hunter2")
    s = load_settings(AllocatorSettings, None, {})
    assert s.token() == "hunter2" and "hunter2" not in str(s.public_dict())
