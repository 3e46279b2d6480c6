"""The MCP jobs: `mcp_test` (connect, initialize, list the tools and cache them on the configuration) and
`mcp_call` (call one tool), and a tool call for an agent's turn.

A call's result has the sandboxed tools' shape where it applies: `reason` (`returned`: the server
answered; `tool_error`: it answered with `isError`), `is_error`, `text` (the text blocks, capped at
`AGENTMEM_TOOL_OUTPUT_CAP_BYTES`), `structured`, `content`, `duration_ms`, `isolation` (stdio). Server
progress notifications are streamed as `progress` events. Failures:

- the call outlives its timeout: `mcp_timeout` (a stdio server is stopped: it may be stuck);
- the stdio server dies under the call: `mcp_server_died`. The next call starts a new process. The
  call itself is retried (per the job's retry policy) only when the server's cached annotations say
  the tool is read-only or idempotent; otherwise repeating it could repeat its effects, so the job
  fails at once;
- an HTTP server unreachable or answering 429/5xx: retried with backoff, then `mcp_unavailable`
  (transient: the job is retried per its policy).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from sqlalchemy import func

from core.db import session_scope
from core.errors import PermanentJobError, TransientJobError
from core.settings import get_settings
from pipelines.jobs.events import publish_event
from pipelines.jobs.runner import JobContext
from pipelines.mcp import connect
from pipelines.mcp.pool import get_pool
from pipelines.mcp.servers import ServerSpec, find_tool, live_spec
from schemas.enums import EventType
from schemas.tables import McpServer

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
Checkpoint = Callable[[], Awaitable[None]]


async def supervise(work: Awaitable[dict[str, Any]], checkpoint: Checkpoint, every: float = 0.25) -> dict[str, Any]:
    """Await `work`, calling `checkpoint` every `every` seconds; an exception out of it cancels the work."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            await checkpoint()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_mcp_server(ctx: JobContext) -> dict[str, Any]:
    """Connect, initialize and list the server's tools; cache them on the configuration with the time."""
    server_id = uuid.UUID(ctx.job.payload["server_id"])
    async with session_scope() as session:
        _, spec = await live_spec(session, ctx.job.org_id, server_id)
    started = time.monotonic()

    async def listing(connected: connect.Connected) -> dict[str, Any]:
        return {"info": connect.server_info(connected.init), "tools": await connect.list_all_tools(connected.session),
                "isolation": connected.isolation}

    found = await supervise(_guarded(spec, listing), lambda: ctx.progress(0, 1, "connecting"))
    await store_tools(server_id, spec.version, found["info"], found["tools"])
    return {"server_id": str(server_id), "server_name": spec.name, "transport": spec.transport,
            "name": found["info"]["name"], "version": found["info"]["version"],
            "protocol_version": found["info"]["protocol_version"], "tools": [t["name"] for t in found["tools"]],
            "tools_count": len(found["tools"]), "duration_ms": int((time.monotonic() - started) * 1000),
            "isolation": found["isolation"]}


async def store_tools(server_id: uuid.UUID, version: int, info: dict[str, Any], tools: list[dict[str, Any]]) -> None:
    """Cache a tool list on the configuration, unless it changed (a new version) or was deleted meanwhile."""
    async with session_scope() as session:
        row = await session.get(McpServer, server_id, with_for_update=True)
        if row is not None and row.deleted_at is None and row.version == version:
            row.tools, row.server_info, row.tools_refreshed_at = tools, info, func.now()
        await session.commit()


async def call_mcp_tool(ctx: JobContext) -> dict[str, Any]:
    """Call the job's tool with its arguments; stream the server's progress; the result says how it ended."""
    payload = ctx.job.payload
    server_id = uuid.UUID(payload["server_id"])
    async with session_scope() as session:
        row, spec = await live_spec(session, ctx.job.org_id, server_id)
        retryable = _retryable(find_tool(row, payload["tool_name"]))
    last_row_write = time.monotonic()

    async def progress(done: float, total: float | None, message: str | None) -> None:
        await publish_event(EventType.PROGRESS, ctx.job, {"done": done, "total": total, "message": message,
                                                          "output": {"progress": done, "total": total,
                                                                     "message": message}})

    async def checkpoint() -> None:
        nonlocal last_row_write
        if time.monotonic() - last_row_write >= 1.0:  # the row is also the cancellation check
            last_row_write = time.monotonic()
            await ctx.progress(0, 1, "running")

    result = await supervise(run_tool(spec, payload["tool_name"], payload["arguments"], progress=progress,
                                      retryable=retryable), checkpoint)
    return {"server_id": str(server_id), "server_name": spec.name, "tool_name": payload["tool_name"], **result}


def _retryable(tool: dict[str, Any] | None) -> bool:
    hints = (tool or {}).get("annotations") or {}
    return bool(hints.get("readOnlyHint") or hints.get("idempotentHint"))


async def run_tool(spec: ServerSpec, tool: str, arguments: dict[str, Any], *, progress: Progress | None = None,
                   retryable: bool = False) -> dict[str, Any]:
    """Call one tool of the server within its timeout; `reason`, the output, the duration, the isolation."""
    settings = get_settings()
    started = time.monotonic()

    async def calling(connected: connect.Connected) -> dict[str, Any]:
        try:
            with anyio.fail_after(spec.timeout_seconds):
                result = await connected.session.call_tool(tool, arguments, progress_callback=progress)
        except TimeoutError as exc:
            if connected.pooled is not None:  # stuck, perhaps for good: the next call gets a new process
                await get_pool().discard(spec.pool_key)
            raise PermanentJobError(f"MCP tool {tool!r} of {spec.name!r} did not answer within "
                                    f"{spec.timeout_seconds:g} s", code="mcp_timeout",
                                    details={"timeout_seconds": spec.timeout_seconds}) from exc
        except MCPError as exc:
            if connected.pooled is not None and exc.error.code == types.CONNECTION_CLOSED:
                await get_pool().discard(spec.pool_key)
                message = (f"MCP server {spec.name!r} died during the call to {tool!r}; it is restarted at the "
                           "next call")
                if retryable:
                    raise TransientJobError(message + " (the tool is idempotent: retried)",
                                            code="mcp_server_died") from exc
                raise PermanentJobError(message + " (not retried: the tool is not marked idempotent or read-only)",
                                        code="mcp_server_died") from exc
            raise PermanentJobError(f"MCP server {spec.name!r} refused the call to {tool!r}: {exc.error.message}",
                                    code="mcp_error", details={"mcp_code": exc.error.code}) from exc
        out = connect.tool_result(result, settings.tool_output_cap_bytes)
        return {"transport": spec.transport, "reason": "tool_error" if out["is_error"] else "returned", **out,
                "duration_ms": int((time.monotonic() - started) * 1000), "isolation": connected.isolation}

    return await _guarded(spec, calling)


async def _guarded(spec: ServerSpec, work: Callable[[connect.Connected], Awaitable[dict[str, Any]]]
                   ) -> dict[str, Any]:
    try:
        return await connect.with_session(spec, work)
    except (PermanentJobError, TransientJobError):
        raise
    except Exception as exc:
        raise connect.classify(spec, exc) from exc


async def call_for_agent(org_id: uuid.UUID, server_id: uuid.UUID, tool: str, arguments: dict[str, Any],
                         checkpoint: Checkpoint) -> dict[str, Any]:
    """An agent turn's call of an MCP tool: the result the model sees (a failure is a result, not an exception)."""
    async with session_scope() as session:
        row, spec = await live_spec(session, org_id, server_id)
        retryable = _retryable(find_tool(row, tool))
    try:
        result = await supervise(run_tool(spec, tool, arguments, retryable=retryable), checkpoint)
    except (PermanentJobError, TransientJobError) as exc:
        return {"reason": exc.code, "error": exc.message}
    keep = ("reason", "is_error", "text", "text_truncated", "structured", "duration_ms")
    return {k: result[k] for k in keep}
