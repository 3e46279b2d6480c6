"""`AgentMem` and `AsyncAgentMem`: one HTTP client each, and the API's resources on it."""

from __future__ import annotations

from typing import Any

import httpx

from agentmem.operations import Exports, Maintenance
from agentmem.resources import Agents, Blocks, Conversations, Jobs, Memories, Schedules, Tools, Webhooks
from agentmem.transport import AsyncTransport, SyncTransport


class _Resources:
    def _attach(self, transport: SyncTransport | AsyncTransport) -> None:
        self.memories = Memories(transport)
        self.jobs = Jobs(transport)
        self.blocks = Blocks(transport)
        self.agents = Agents(transport)
        self.conversations = Conversations(transport)
        self.tools = Tools(transport)
        self.schedules = Schedules(transport)
        self.webhooks = Webhooks(transport)
        self.maintenance = Maintenance(transport)
        self.exports = Exports(transport)


class AgentMem(_Resources):
    """A client of an AgentMem API: `AgentMem("http://127.0.0.1:8000", api_key="amk_…")`.

    `organization` acts for another organization of a user token (`X-Organization-Id`). 429 and 503 are retried
    up to `max_retries` times, waiting what `Retry-After` says (at most `max_backoff` seconds). Use it as a
    context manager, or call `close()`.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, organization: str | None = None,
                 timeout: float = 30.0, max_retries: int = 5, max_backoff: float = 60.0,
                 headers: dict[str, str] | None = None, http_client: httpx.Client | None = None) -> None:
        self.transport = SyncTransport(base_url, api_key, organization=organization, timeout=timeout,
                                       max_retries=max_retries, max_backoff=max_backoff, headers=headers,
                                       http=http_client)
        self._attach(self.transport)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> AgentMem:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncAgentMem(_Resources):
    """`AgentMem` for asyncio: calls are awaited, lists and event streams are async iterators."""

    def __init__(self, base_url: str, api_key: str | None = None, *, organization: str | None = None,
                 timeout: float = 30.0, max_retries: int = 5, max_backoff: float = 60.0,
                 headers: dict[str, str] | None = None, http_client: httpx.AsyncClient | None = None) -> None:
        self.transport = AsyncTransport(base_url, api_key, organization=organization, timeout=timeout,
                                        max_retries=max_retries, max_backoff=max_backoff, headers=headers,
                                        http=http_client)
        self._attach(self.transport)

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncAgentMem:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
