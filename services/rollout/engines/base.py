"""The engine interface every backend implements. Engines work on token ids only; the service
tokenizes, detokenizes and scores. An engine runs inside a replica worker process."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from krl.model.weights import WeightSpec


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenItem:
    key: tuple[int, int]
    """(prompt index in the request, part) - a prompt with a large n may be split in parts."""
    prompt_ids: tuple[int, ...]
    n: int


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    """log softmax(logits / T) of each sampled token (T = 1 when greedy), no top-p truncation:
    the quantity the trainer recomputes for its importance ratio."""
    finish: str
    """'stop' (EOS or a stop string) or 'length'."""


@dataclass(frozen=True)
class EngineInfo:
    engine: str
    model: str
    max_context_tokens: int


def _never() -> bool:
    return False


class Engine(abc.ABC):
    cancelled: Callable[[], bool] = staticmethod(_never)
    """Set by the worker for each job: True once the job's caller has gone. An engine checks it
    between units of bounded work (a chunk of rows, a step) and stops early; the worker also
    checks it between groups."""

    @abc.abstractmethod
    def info(self) -> EngineInfo: ...

    @abc.abstractmethod
    def generate(
        self, items: list[GenItem], sampling: Sampling
    ) -> Iterator[tuple[tuple[int, int], list[Sample]]]:
        """Yield (item key, its n samples) for each item, as soon as each is finished."""

    def weight_spec(self) -> WeightSpec | None:
        """Names and shapes an update must match; None when the engine refuses updates."""
        return None

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def load_checkpoint(self, path: Path) -> None:
        """Load every *.safetensors file of a folder (or one file) through load_weights."""
        from safetensors.torch import load_file

        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        self.load_weights(state)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
