"""RolloutClient: generate groups and push weights from a trainer.

    client = RolloutClient("127.0.0.1:50052")
    for group in client.generate([PromptSpec("p1", n=8, text="3+5=", answer="8")],
                                 temperature=1.0, max_new_tokens=16):
        print(group.prompt_id, [c.reward for c in group.completions])
    client.push_weights(version=1, payload=krl.model.weights.to_bytes(model))

Generate is resumable: when the stream breaks with a retryable error (the service or an engine
restarting), the client asks again for the prompts not yet delivered, so every prompt's group
arrives exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import grpc

from krl.api.rollout.v1 import rollout_pb2 as pb
from krl.api.rollout.v1 import rollout_pb2_grpc as pb_grpc
from krl_client.channel import GrpcClient
from krl_client.errors import RETRYABLE_CODES as RETRYABLE
from krl_client.errors import from_grpc_error

PUSH_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""A weight push is re-sent only when the service was away or slow: a RESOURCE_EXHAUSTED there
is a message-size refusal, and re-sending a multi-GB payload cannot change it."""

CHUNK_BYTES = 4 << 20
FINISH = {pb.FINISH_REASON_STOP: "stop", pb.FINISH_REASON_LENGTH: "length"}


@dataclass(frozen=True)
class PromptSpec:
    prompt_id: str
    n: int
    text: str = ""
    answer: str = ""
    verifier: str = "exact"
    token_ids: tuple[int, ...] = ()


# Completion and Group are the one definition: the service builds them, the client returns them.
@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    reward: float
    success: bool
    finish: str


@dataclass(frozen=True)
class Group:
    prompt_id: str
    index: int
    """Position of the prompt in the list given to generate()."""
    completions: list[Completion]
    policy_version: int
    latency_s: float
    prompt_token_ids: list[int] = field(default_factory=list)
    """The prompt as the engine saw it (empty from a service older than this field)."""


@dataclass(frozen=True)
class Info:
    engine: str
    model: str
    policy_version: int
    replicas: int
    max_n: int
    max_context_tokens: int


class RolloutClient(GrpcClient):
    def __init__(self, target: str, **kw) -> None:
        """kw: token, timeout_s (a call's deadline; default 600 s here), retries, backoff_s,
        max_backoff_s."""
        kw.setdefault("timeout_s", 600.0)
        kw.setdefault("max_message_bytes", 256 * 1024 * 1024)
        super().__init__(target, **kw)
        self._stub = pb_grpc.RolloutServiceStub(self._channel)

    def info(self) -> Info:
        r = self._call(self._stub.GetInfo, pb.GetInfoRequest(), timeout_s=10.0)
        return Info(r.engine, r.model, r.policy_version, r.replicas, r.max_n, r.max_context_tokens)

    def generate(
        self,
        prompts: Sequence[PromptSpec],
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        min_policy_version: int = 0,
    ) -> Iterator[Group]:
        sampling = pb.SamplingParams(
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            stop=list(stop),
            seed=seed,
        )
        left = list(range(len(prompts)))
        for attempt in range(self.retries + 1):
            req = pb.GenerateRequest(
                prompts=[_to_pb(prompts[i]) for i in left],
                sampling=sampling,
                min_policy_version=min_policy_version,
            )
            delivered: set[int] = set()
            try:
                for res in self._stub.Generate(
                    req, timeout=self.timeout_s, metadata=self._metadata
                ):
                    index = left[res.index]
                    delivered.add(index)
                    yield _group(res, index)
                return
            except grpc.RpcError as e:
                left = [i for i in left if i not in delivered]
                if e.code() not in RETRYABLE or attempt == self.retries or not left:
                    raise from_grpc_error(e) from e
                self._sleep_before_retry(attempt, e)

    def push_weights(
        self, version: int, *, payload: bytes | None = None, checkpoint_path: str | None = None
    ) -> float:
        """Send new weights (inline safetensors bytes, or a path the service can read); returns
        the service's load time in seconds. A retried push of the same version is a no-op."""

        def messages() -> Iterator[pb.UpdateWeightsRequest]:
            yield pb.UpdateWeightsRequest(
                header=pb.WeightsHeader(
                    version=version,
                    checkpoint_path=checkpoint_path or "",
                    total_bytes=len(payload or b""),
                )
            )
            view = memoryview(payload or b"")
            for start in range(0, len(view), CHUNK_BYTES):
                yield pb.UpdateWeightsRequest(
                    safetensors_chunk=bytes(view[start : start + CHUNK_BYTES])
                )

        for attempt in range(self.retries + 1):
            try:
                res = self._stub.UpdateWeights(
                    messages(), timeout=self.timeout_s, metadata=self._metadata
                )
                return res.load_s
            except grpc.RpcError as e:
                if e.code() not in PUSH_RETRYABLE or attempt == self.retries:
                    raise from_grpc_error(e) from e
                self._sleep_before_retry(attempt, e)
        raise AssertionError("unreachable")

    def wait_ready(self, timeout_s: float = 120.0) -> Info:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.info()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _to_pb(p: PromptSpec) -> pb.PromptRequest:
    return pb.PromptRequest(
        prompt_id=p.prompt_id,
        n=p.n,
        text=p.text,
        token_ids=list(p.token_ids),
        answer=p.answer,
        verifier=p.verifier,
    )


def _group(res: pb.GenerateResponse, index: int) -> Group:
    return Group(
        prompt_id=res.prompt_id,
        index=index,
        completions=[
            Completion(
                c.text,
                list(c.token_ids),
                list(c.logprobs),
                c.reward,
                c.success,
                FINISH.get(c.finish_reason, "stop"),
            )
            for c in res.completions
        ],
        policy_version=res.policy_version,
        latency_s=res.latency_s,
        prompt_token_ids=list(res.prompt_token_ids),
    )
