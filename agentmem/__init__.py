"""The Python SDK of AgentMem: `from agentmem import AgentMem, AsyncAgentMem`.

Models are the API's own (`schemas/`); calls that queue work answer a `Job` (`wait`, `events`, `cancel`).
"""

from agentmem.client import AgentMem, AsyncAgentMem
from agentmem.errors import (
    AgentMemError,
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    JobFailed,
    JobTimeout,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnavailableError,
)
from agentmem.jobs import AsyncJob, AsyncTurnStream, Job, TurnStream

__all__ = ["AgentMem", "AsyncAgentMem", "Job", "AsyncJob", "TurnStream", "AsyncTurnStream", "AgentMemError",
           "APIConnectionError", "APIError", "AuthenticationError", "BadRequestError", "ConflictError", "JobFailed",
           "JobTimeout", "NotFoundError", "PermissionDeniedError", "RateLimitError", "UnavailableError"]
