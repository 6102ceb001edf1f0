"""The weight format pushed from the trainer to the rollout service: a safetensors payload of
the model's parameters, checked against the serving model's names and shapes before anything
is swapped in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from krl.common.errors import FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str


WeightSpec = dict[str, TensorSpec]


def spec_of(model: torch.nn.Module) -> WeightSpec:
    """Names, shapes and dtypes of the parameters a weight update must provide (tied weights
    appear once, under the name state_dict() keeps)."""
    return {
        name: TensorSpec(tuple(t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in model.state_dict().items()
        if not _is_alias(model, name)
    }


def _is_alias(model: torch.nn.Module, name: str) -> bool:
    """lm_head.weight when it is the embedding matrix (tie_word_embeddings)."""
    cfg = getattr(model, "config", None)
    return bool(getattr(cfg, "tie_word_embeddings", False)) and name == "lm_head.weight"


def to_bytes(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    if isinstance(model_or_state, torch.nn.Module):
        model = model_or_state
        state = {k: v for k, v in model.state_dict().items() if not _is_alias(model, k)}
    else:
        state = dict(model_or_state)
    return st_save({k: v.detach().contiguous().cpu() for k, v in state.items()})


def from_bytes(payload: bytes) -> dict[str, torch.Tensor]:
    try:
        return st_load(payload)
    except Exception as e:  # safetensors raises its own SafetensorError for any bad header
        raise InvalidArgument(f"not a safetensors payload: {e}", field="safetensors_chunk") from e


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def shapes_in_files(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes in a checkpoint (a .safetensors file or a folder of them), read from the
    headers only."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise InvalidArgument(
            f"no safetensors checkpoint at {path}", field="header.checkpoint_path"
        )
    out: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():  # noqa: SIM118 - safe_open is not a Mapping
                    out[k] = tuple(st.get_slice(k).get_shape())
        except Exception as e:  # SafetensorError, OSError: the header cannot be read
            raise InvalidArgument(
                f"{f.name} is not a readable safetensors file ({type(e).__name__})",
                field="header.checkpoint_path",
            ) from None
    return out


def check_against(shapes: Mapping[str, tuple[int, ...]], spec: WeightSpec) -> None:
    """FAILED_PRECONDITION naming the first few mismatches; nothing is loaded on failure."""
    state = shapes
    missing = sorted(set(spec) - set(state))
    unknown = sorted(set(state) - set(spec))
    shapes = [
        f"{k}: got {tuple(state[k])}, model has {spec[k].shape}"
        for k in sorted(set(spec) & set(state))
        if tuple(state[k]) != spec[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unknown:
        problems.append(f"{len(unknown)} unknown (e.g. {', '.join(unknown[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} with other shapes ({'; '.join(shapes[:3])})")
    if problems:
        raise FailedPrecondition(
            "weights do not match the serving model: "
            + ", ".join(problems)
            + "; the old weights keep serving"
        )
