"""krl_client: the knapsack-rl allocator from any trainer. Depends only on grpcio and protobuf.

    from krl_client import AsyncAllocatorClient
    async with AsyncAllocatorClient("127.0.0.1:50051", namespace="my-run") as client:
        alloc = await client.allocate(prompt_ids, budget=8 * len(prompt_ids), min_n=2, max_n=32)
        ...  # generate alloc.n[pid] rollouts per prompt, score them
        await client.report(alloc.allocation_id, {pid: (successes, trials) for ...})

AllocationSession / AsyncAllocationSession add the step around it: expand the batch by n, group
the rewards, report exactly once across resumes (a journal), and knapsack/* metrics."""

from krl_client.aio import AsyncAllocatorClient
from krl_client.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    KrlError,
    NotFound,
    Overloaded,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from krl_client.messages import MODES, OBJECTIVES, Allocation, Outcome, ReportResult
from krl_client.session import (
    AllocationSession,
    AsyncAllocationSession,
    Journal,
    StepPlan,
    informative,
    outcomes,
    step_metrics,
)
from krl_client.sync import AllocatorClient

__version__ = "0.1.0"
__all__ = [
    "MODES",
    "OBJECTIVES",
    "Aborted",
    "Allocation",
    "AllocationSession",
    "AllocatorClient",
    "AsyncAllocationSession",
    "AsyncAllocatorClient",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "Journal",
    "KrlError",
    "NotFound",
    "Outcome",
    "Overloaded",
    "ReportResult",
    "ResourceExhausted",
    "StepPlan",
    "Unauthenticated",
    "Unavailable",
    "informative",
    "outcomes",
    "step_metrics",
]
