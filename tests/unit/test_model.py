from pathlib import Path

import pytest
import torch

from krl.common.errors import FailedPrecondition, InvalidArgument
from krl.model.loading import load_model, load_tokenizer
from krl.model.tiny import TinyShape, build_tiny_model
from krl.model.weights import (
    check_against,
    from_bytes,
    shapes_in_files,
    shapes_of,
    spec_of,
    to_bytes,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", seed=0)


def test_char_tokenizer_round_trips_through_the_saved_folder(tiny: Path) -> None:
    tok = load_tokenizer(tiny)
    text = "12+7=\n ab  Z~"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.decode([*ids, tok.eos_token_id], skip_special_tokens=True) == text


def test_build_is_deterministic_and_loads(tmp_path: Path, tiny: Path) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    a, b = load_model(tiny), load_model(again)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert a.config.model_type == "qwen3" and a.config.tie_word_embeddings


def test_weights_round_trip_and_checks(tiny: Path, tmp_path: Path) -> None:
    model = load_model(tiny)
    spec = spec_of(model)
    assert "lm_head.weight" not in spec  # tied: sent once, as the embedding
    state = from_bytes(to_bytes(model))
    check_against(shapes_of(state), spec)
    assert shapes_in_files(tiny) == {k: v.shape for k, v in spec.items()}
    state.pop("model.norm.weight")
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    state["extra"] = torch.zeros(1)
    with pytest.raises(FailedPrecondition) as e:
        check_against(shapes_of(state), spec)
    msg = str(e.value)
    assert "1 missing (e.g. model.norm.weight)" in msg and "1 unknown (e.g. extra)" in msg
    assert "model.layers.0.mlp.up_proj.weight: got (3, 3)" in msg
    with pytest.raises(InvalidArgument):
        from_bytes(b"garbage")
    with pytest.raises(InvalidArgument, match="not a local HF model folder"):
        load_model(tmp_path / "nothing")


def test_shape_is_configurable(tmp_path: Path) -> None:
    m = load_model(build_tiny_model(tmp_path / "w", TinyShape(hidden_size=64, num_hidden_layers=2)))
    assert m.config.hidden_size == 64 and m.config.num_hidden_layers == 2
