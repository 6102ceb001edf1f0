"""gRPC adapter of TrainerService: status and control of the running loop."""

from __future__ import annotations

import asyncio

import grpc

from krl.api.trainer.v1 import trainer_pb2 as pb
from krl.api.trainer.v1 import trainer_pb2_grpc as pb_grpc
from krl.common.errors import FailedPrecondition
from krl.common.grpc_server import unary_errors
from krl.trainer.build import TrainerRun
from krl.trainer.control import FAILED, FINISHED, PAUSED, RUNNING, STARTING, STOPPING

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainerService"].full_name
STATES = {
    STARTING: pb.TRAINER_STATE_STARTING,
    RUNNING: pb.TRAINER_STATE_RUNNING,
    PAUSED: pb.TRAINER_STATE_PAUSED,
    STOPPING: pb.TRAINER_STATE_STOPPING,
    FINISHED: pb.TRAINER_STATE_FINISHED,
    FAILED: pb.TRAINER_STATE_FAILED,
}
DONE = (FINISHED, FAILED)


class TrainerServicer(pb_grpc.TrainerServiceServicer):
    def __init__(self, trainer: TrainerRun) -> None:
        self.trainer = trainer
        self.control = trainer.control

    def _state(self) -> int:
        return STATES[self.control.state]

    @unary_errors
    async def GetStatus(self, request, context: grpc.aio.ServicerContext):
        t = self.trainer
        st = t.status
        return pb.GetStatusResponse(
            state=self._state(),
            step=st.step,
            total_steps=st.total_steps,
            namespace=t.s.run_namespace,
            strategy=t.s.strategy,
            policy_version=st.policy_version,
            mean_reward=st.mean_reward,
            effective_rollout_ratio=st.effective_rollout_ratio,
            heldout_accuracy=st.heldout_accuracy,
            last_checkpoint=self.control.last_checkpoint,
        )

    @unary_errors
    async def PauseTraining(self, request, context):
        if self.control.state in DONE:
            raise FailedPrecondition(f"the run is {self.control.state}")
        self.control.pause()
        return pb.PauseTrainingResponse(state=self._state())

    @unary_errors
    async def ResumeTraining(self, request, context):
        if self.control.state in DONE:
            raise FailedPrecondition(f"the run is {self.control.state}")
        self.control.resume()
        return pb.ResumeTrainingResponse(state=self._state())

    @unary_errors
    async def SaveCheckpoint(self, request, context):
        """Checkpoint after the step in progress and answer with its path (waits for it)."""
        if self.control.state in DONE or self.control.state == STARTING:
            raise FailedPrecondition(f"the run is {self.control.state}; nothing to checkpoint")
        if self.control.state == PAUSED:
            path = await asyncio.to_thread(self.trainer.save_checkpoint)
            return pb.SaveCheckpointResponse(path=str(path), step=self.trainer.step)
        ev = self.control.request_checkpoint()
        while not ev.is_set():
            if self.control.state in DONE:
                break
            await asyncio.sleep(0.05)
        return pb.SaveCheckpointResponse(path=self.control.last_checkpoint, step=self.trainer.step)

    @unary_errors
    async def StopTraining(self, request, context):
        self.control.stop(checkpoint=request.checkpoint)
        return pb.StopTrainingResponse(state=self._state())


def register(trainer: TrainerRun):
    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(trainer), server)

    return add
