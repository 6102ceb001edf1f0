"""The trainer process: the loop in a worker thread, the control gRPC server and the HTTP server
in the event loop. SIGINT/SIGTERM stop the loop after the step in progress, with a checkpoint;
the process exits when the run ends (0 finished or stopped, 1 failed)."""

from __future__ import annotations

import asyncio
import logging
import signal

from krl.common.grpc_server import GrpcServer
from krl.common.http_server import HttpServer
from krl.trainer import grpc_api
from krl.trainer.build import TrainerRun
from krl.trainer.control import FAILED
from krl.trainer.http_api import build_app
from krl.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


async def serve(settings: TrainerSettings) -> int:
    trainer = TrainerRun(settings)
    token = settings.token()
    grpc_server = GrpcServer(
        host=settings.host,
        port=settings.grpc_port,
        service_names=[grpc_api.SERVICE_NAME],
        register=grpc_api.register(trainer),
        token=token,
    )
    await grpc_server.start()
    http = HttpServer(
        build_app(trainer, token), settings.host, settings.http_port, log_level="warning"
    )
    await http.start()
    log.info(
        "trainer control: gRPC %s:%d, HTTP http://%s:%d (/v1/status, /metrics); run %s",
        settings.host,
        grpc_server.port,
        settings.host,
        http.port,
        trainer.run_dir,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: trainer.control.stop(checkpoint=True))
    try:
        outcome = await asyncio.to_thread(trainer.run)
    finally:
        await grpc_server.stop(settings.grace_s)
        await http.stop()
    log.info("trainer %s at step %d; run folder %s", outcome, trainer.step, trainer.run_dir)
    return 1 if outcome == FAILED else 0
