"""The sync gRPC client base every client of the project uses lives in the slim client
(krl_client.channel): one channel with limits, token, deadlines and retries of the retryable
codes only."""

from krl_client.channel import GrpcClient  # noqa: F401 - re-exported for the service clients
from krl_client.errors import RETRYABLE_CODES as RETRYABLE  # noqa: F401
