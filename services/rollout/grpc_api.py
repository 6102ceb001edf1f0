"""gRPC adapter: converts RolloutService messages to the use cases' dataclasses and back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from krl.api.rollout.v1 import rollout_pb2 as pb
from krl.api.rollout.v1 import rollout_pb2_grpc as pb_grpc
from krl.clients.rollout import Group
from krl.common.errors import InvalidArgument
from krl.common.grpc_server import stream_errors, unary_errors
from krl.rollout.engines.base import Sampling
from krl.rollout.service import PromptIn, Rollout

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RolloutService"].full_name
FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


def group_to_pb(g: Group) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        prompt_id=g.prompt_id,
        index=g.index,
        completions=[
            pb.Completion(
                text=c.text,
                token_ids=c.token_ids,
                logprobs=c.logprobs,
                reward=c.reward,
                success=c.success,
                length=len(c.token_ids),
                finish_reason=FINISH[c.finish],
            )
            for c in g.completions
        ],
        policy_version=g.policy_version,
        latency_s=g.latency_s,
        prompt_token_ids=g.prompt_token_ids,
    )


class RolloutServicer(pb_grpc.RolloutServiceServicer):
    def __init__(self, rollout: Rollout) -> None:
        self.rollout = rollout
        self.error_counter = rollout.metrics.errors

    @stream_errors
    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        s = request.sampling
        sampling = Sampling(
            temperature=s.temperature,
            top_p=s.top_p,
            max_new_tokens=s.max_new_tokens,
            stop=tuple(s.stop),
            seed=s.seed if s.HasField("seed") else None,
        )
        for i, p in enumerate(request.prompts):
            self.rollout.check_token_count(i, len(p.token_ids))
        prompts = [
            PromptIn(p.prompt_id, p.n, p.text, tuple(p.token_ids), p.answer, p.verifier)
            for p in request.prompts
        ]
        groups = self.rollout.generate(prompts, sampling, request.min_policy_version)
        async with contextlib.aclosing(groups):  # a cancelled call stops the engines' work
            async for group in groups:
                yield group_to_pb(group)

    @unary_errors
    async def UpdateWeights(
        self,
        request_iterator: AsyncIterator[pb.UpdateWeightsRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UpdateWeightsResponse:
        limit = self.rollout.settings.max_weights_bytes
        header: pb.WeightsHeader | None = None
        chunks: list[bytes] = []
        size = 0
        async for msg in request_iterator:
            if msg.HasField("header"):
                if header is not None:
                    raise InvalidArgument("sent twice", field="header")
                header = msg.header
                if header.total_bytes > limit:
                    raise InvalidArgument(
                        f"{header.total_bytes} bytes; the most inline is {limit} (send a "
                        "checkpoint_path instead)",
                        field="header.total_bytes",
                    )
            elif header is None:
                raise InvalidArgument("the first message must be the header", field="header")
            else:
                size += len(msg.safetensors_chunk)
                if size > header.total_bytes:
                    raise InvalidArgument(
                        f"more than the {header.total_bytes} bytes announced",
                        field="safetensors_chunk",
                    )
                chunks.append(msg.safetensors_chunk)
        if header is None:
            raise InvalidArgument("no header", field="header")
        payload = None
        if not header.checkpoint_path:
            if size != header.total_bytes:
                raise InvalidArgument(
                    f"got {size} bytes of the {header.total_bytes} announced",
                    field="safetensors_chunk",
                )
            payload = b"".join(chunks)
        version, load_s = await self.rollout.update_weights(
            header.version, payload, header.checkpoint_path or None
        )
        return pb.UpdateWeightsResponse(version=version, load_s=load_s)

    @unary_errors
    async def GetInfo(self, request: pb.GetInfoRequest, context: grpc.aio.ServicerContext):
        info = self.rollout.pool.info
        s = self.rollout.settings
        return pb.GetInfoResponse(
            engine=info.engine,
            model=info.model,
            policy_version=self.rollout.version,
            replicas=len(self.rollout.pool.replicas),
            max_n=s.max_n,
            max_context_tokens=info.max_context_tokens,
        )


def register(rollout: Rollout):
    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_RolloutServiceServicer_to_server(RolloutServicer(rollout), server)

    return add
