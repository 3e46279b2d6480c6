"""Reaching an MCP server with the official SDK: a session over streamable HTTP (per call, through the outbound
policy, transient failures retried with backoff) or the worker's pooled stdio process; what a failure
means; a tool list and a tool result as AgentMem stores them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from core.errors import AppError, PermanentJobError, TransientJobError
from core.outbound_httpx2 import guarded_client2
from core.settings import get_settings
from pipelines.mcp.pool import Running, get_pool
from pipelines.mcp.servers import ServerSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_TOOL_PAGES = 20
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class Connected:
    """An initialized session and what to report about it."""

    session: ClientSession
    init: Any
    isolation: dict[str, Any] | None
    pooled: Running | None = None


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def _transient(exc: BaseException) -> bool:
    for leaf in leaves(exc):
        if isinstance(leaf, httpx2.HTTPStatusError):
            return leaf.response.status_code in RETRY_STATUS
        if isinstance(leaf, httpx2.TransportError | TransientJobError):
            return True
    return False


def classify(spec: ServerSpec, exc: BaseException) -> AppError:
    """An SDK or transport failure as a job error: permanent, or transient (retried by the job's policy)."""
    for leaf in leaves(exc):
        if isinstance(leaf, AppError):
            return leaf
        if isinstance(leaf, httpx2.HTTPStatusError):
            status = leaf.response.status_code
            message = f"MCP server {spec.name!r} answered HTTP {status}"
            return (TransientJobError(message, code="mcp_unavailable") if status in RETRY_STATUS
                    else PermanentJobError(message, code="mcp_http_error"))
        if isinstance(leaf, httpx2.TransportError):
            return TransientJobError(f"MCP server {spec.name!r} can't be reached: {type(leaf).__name__}: {leaf}",
                                     code="mcp_unavailable")
        if isinstance(leaf, MCPError):
            return PermanentJobError(f"MCP server {spec.name!r} refused the request: {leaf.error.message}",
                                     code="mcp_error", details={"mcp_code": leaf.error.code})
    first = leaves(exc)[0]
    return PermanentJobError(f"MCP server {spec.name!r} failed: {type(first).__name__}: {first}",
                             code="mcp_connect_failed")


@contextlib.asynccontextmanager
async def _http_session(spec: ServerSpec) -> AsyncIterator[Connected]:
    settings = get_settings()
    timeout = httpx2.Timeout(settings.mcp_connect_timeout_seconds, read=spec.timeout_seconds + 5)
    async with guarded_client2(timeout=timeout, headers=spec.headers) as client:
        async with streamable_http_client(spec.url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                try:
                    with anyio.fail_after(settings.mcp_connect_timeout_seconds):
                        init = await session.initialize()
                except TimeoutError as exc:
                    raise PermanentJobError(f"MCP server {spec.name!r} did not answer initialize within "
                                            f"{settings.mcp_connect_timeout_seconds:g} s",
                                            code="mcp_connect_failed") from exc
                yield Connected(session, init, None)


async def with_session(spec: ServerSpec, work: Callable[[Connected], Awaitable[T]]) -> T:
    """Run `work` on an initialized session to the server and return what it returns.

    streamable_http: a session per call; a transient failure (connection error, 429, 5xx) before `work`
    finished is retried whole, `mcp_http_retries` times with backoff. stdio: the pooled process.
    Errors out of `work` that are AppErrors pass through unchanged.
    """
    if spec.transport == "stdio":
        entry = await get_pool().acquire(spec)
        entry.calls += 1
        return await work(Connected(entry.session, entry.init, entry.isolation, pooled=entry))

    async def attempt() -> T:
        async with _http_session(spec) as connected:
            return await work(connected)

    try:
        async for retry in AsyncRetrying(stop=stop_after_attempt(get_settings().mcp_http_retries + 1),
                                         wait=wait_exponential(multiplier=0.2, max=5),
                                         retry=retry_if_exception(_transient), reraise=True):
            with retry:
                return await attempt()
    except Exception as exc:
        known = next((leaf for leaf in leaves(exc) if isinstance(leaf, AppError)), None)
        raise (known or classify(spec, exc)) from exc
    raise AssertionError("unreachable: tenacity returns or raises")


async def list_all_tools(session: ClientSession) -> list[dict[str, Any]]:
    """Every tool the server lists (following cursors), as the cache stores them."""
    tools: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_TOOL_PAGES):
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools += [tool_entry(t) for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def tool_entry(tool: types.Tool) -> dict[str, Any]:
    """A tool as the cache stores it (and `GET …/tools` returns it)."""
    annotations = tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True) \
        if tool.annotations else None
    return {"name": tool.name, "title": tool.title, "description": tool.description,
            "input_schema": tool.input_schema or {"type": "object"}, "annotations": annotations or None}


def server_info(init: Any) -> dict[str, Any]:
    """What the server said of itself in `initialize`."""
    info = init.server_info
    return {"name": info.name, "version": info.version, "protocol_version": init.protocol_version,
            "instructions": (init.instructions or "")[:2000] or None}


def tool_result(result: types.CallToolResult, cap: int) -> dict[str, Any]:
    """A CallToolResult as a job result: `is_error`, the text blocks joined (`text`, capped), `structured`,
    and every block as JSON (`content`, text and binary data left out: see `text`)."""
    texts, blocks = [], []
    for block in result.content:
        data = block.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(block, types.TextContent):
            texts.append(block.text)
            data.pop("text", None)
        for key in ("data", "blob"):
            if key in data:
                data[key] = f"<{len(data[key])} base64 characters>"
        resource = data.get("resource")
        if isinstance(resource, dict) and "text" in resource:
            texts.append(resource.pop("text"))
        if isinstance(resource, dict) and "blob" in resource:
            resource["blob"] = f"<{len(resource['blob'])} base64 characters>"
        blocks.append(data)
    text = "\n".join(texts)
    encoded = text.encode()
    return {"is_error": bool(result.is_error), "text": encoded[:cap].decode(errors="ignore"),
            "text_truncated": len(encoded) > cap, "structured": result.structured_content, "content": blocks}
