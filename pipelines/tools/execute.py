"""The `execute_tool` job: run a tool as it is when the job starts, a registered tool in the sandbox
(`pipelines.tools.sandbox`), a built-in in the worker (`pipelines.tools.workspace`, `.web_search`).

Output is streamed as `progress` events (`data.output.stdout` / `.stderr` chunks, at most the kept cap)
while it runs. A redelivered job runs the tool again: a tool's effects are confined to a working
directory that is thrown away, so running it twice leaves nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import stat
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select

from core.db import session_scope
from core.errors import PermanentJobError, TransientJobError
from core.settings import get_settings
from pipelines.jobs.events import publish_event
from pipelines.jobs.runner import JobContext
from pipelines.tools import sandbox, web_search, workspace
from pipelines.tools.registry import LIMIT_FIELDS, LIVE
from pipelines.tools.workspace import BUILTIN_IDS
from schemas.enums import EventType
from schemas.tables import Tool

log = logging.getLogger(__name__)


def effective_limits(tool: Tool) -> tuple[float, sandbox.Limits]:
    """The timeout and limits an execution gets: the tool's, else the defaults, never above the maxima."""
    settings = get_settings()
    timeout = min(tool.timeout_seconds or settings.tool_timeout_seconds, settings.tool_timeout_max_seconds)
    values = {name: min((tool.limits or {}).get(name) or getattr(settings, default), getattr(settings, maximum))
              for name, (default, maximum) in LIMIT_FIELDS.items()}
    return timeout, sandbox.Limits(**values)


@cache
def warn_if_data_dir_exposed(data_dir: Path) -> None:
    """Log once if other users can read the embedded Valkey's files (a data dir made before they were 0700)."""
    with contextlib.suppress(OSError):
        if (data_dir / "redis").stat().st_mode & (stat.S_IROTH | stat.S_IXOTH):
            log.warning("%s is open to other users; a sandboxed tool could read the embedded Valkey's files: "
                        "chmod 700 it (agentmem up does so at its next start)", (data_dir / "redis").absolute())


def socket_dirs(url: str | None) -> list[Path]:
    """The folders of the Unix sockets a PostgreSQL or Redis URL points at (`?host=/run/postgresql`,
    a percent-encoded host, `unix:///run/redis/redis.sock`)."""
    if not url:
        return []
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return [Path(parts.path).parent] if parts.path.startswith("/") else []
    hosts = [unquote(parts.netloc.rpartition("@")[2].split(":")[0])]
    for value in parse_qs(parts.query).get("host", []):
        hosts += value.split(",")
    return [Path(h) for h in hosts if h.startswith("/")]


def sandbox_hidden() -> tuple[Path, ...]:
    """What a sandboxed tool must not see, even where it sits in a system folder the sandbox shows: the
    data directory, the workspaces, the database's and Redis's socket folders."""
    settings = get_settings()
    return (settings.data_dir.absolute(), workspace.workspaces_dir(),
            *socket_dirs(settings.database_url), *socket_dirs(settings.redis_url))


class _OutputBuffer:
    """Output chunks waiting to be published as one progress event."""

    def __init__(self) -> None:
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def add(self, stream: str, text: str) -> None:
        self.parts[stream].append(text)

    def take(self) -> dict[str, str] | None:
        taken = {k: "".join(v) for k, v in self.parts.items() if v}
        self.parts = {"stdout": [], "stderr": []}
        return taken or None


async def execute_tool(ctx: JobContext) -> dict[str, Any]:
    """Run the job's tool with its arguments; the result says how it ended (`reason`) and what it printed."""
    job = ctx.job
    payload = job.payload
    tool_id = uuid.UUID(payload["tool_id"])
    head = {"tool_id": str(tool_id), "tool_name": payload["tool_name"]}
    if payload.get("builtin"):
        output = await run_builtin(job.org_id, BUILTIN_IDS[tool_id].name, payload["arguments"])
        return {**head, "builtin": True, "reason": "exited", "exit_code": 0, "output": output}
    await check_isolation()
    async with session_scope() as session:
        row = (await session.execute(select(Tool).where(Tool.id == tool_id, Tool.org_id == job.org_id, LIVE))
               ).scalar_one_or_none()
    if row is None:
        raise PermanentJobError(f"tool {tool_id} was deleted before the job ran", code="tool_not_found")
    buffer = _OutputBuffer()

    async def flush() -> None:
        chunk = buffer.take()
        if chunk:
            await publish_event(EventType.PROGRESS, job, {"done": 0, "total": 1, "message": "running",
                                                          "output": chunk})

    last_progress = time.monotonic()

    async def checkpoint() -> None:
        # Output goes to the stream every quarter second (Redis only); the job row, which is also the
        # cancellation check, is written once a second.
        nonlocal last_progress
        await flush()
        if time.monotonic() - last_progress >= 1.0:
            last_progress = time.monotonic()
            await ctx.progress(0, 1, "running")  # raises JobCancelled when cancellation was asked

    result = await run_in_sandbox(row, payload["arguments"], sink=buffer.add, checkpoint=checkpoint)
    await flush()
    return {**head, "builtin": False, **result}


async def run_builtin(org_id: uuid.UUID, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A built-in tool's output: `web_search` on the event loop, a file tool in a thread (its I/O blocks)."""
    if name == "web_search":
        return await web_search.web_search(arguments["query"], arguments.get("max_results"))
    return await asyncio.to_thread(workspace.run_builtin, org_id, name, arguments)


async def check_isolation() -> None:
    """Refuse to run tools where the sandbox can't cut them off the network, unless the operator allows it."""
    settings = get_settings()
    plan = await asyncio.to_thread(sandbox.isolation_plan)
    warn_if_data_dir_exposed(settings.data_dir)
    if not plan["net"] and settings.tool_require_network_isolation:
        raise PermanentJobError("this worker can't give tools a network namespace (unprivileged container or "
                                "kernel without namespaces), and AGENTMEM_TOOL_REQUIRE_NETWORK_ISOLATION is on: "
                                "see the README's sandbox section", code="sandbox_unavailable")


async def run_in_sandbox(row: Tool, arguments: dict[str, Any], *, sink: sandbox.OutputSink,
                         checkpoint: sandbox.Checkpoint) -> dict[str, Any]:
    """Run a registered tool in the sandbox with its limits; how it ended, what it printed, the limits it had.

    `checkpoint` is awaited every quarter second while it runs; an exception out of it (JobCancelled)
    kills the tool and propagates.
    """
    settings = get_settings()
    await check_isolation()
    timeout, limits = effective_limits(row)
    run = sandbox.ToolRun(name=row.name, language=row.language, source=row.source, arguments=arguments,
                          timeout_seconds=timeout, limits=limits, output_cap_bytes=settings.tool_output_cap_bytes,
                          output_limit_bytes=settings.tool_output_limit_bytes)
    try:
        result = await sandbox.run_sandboxed(run, sink=sink, checkpoint=checkpoint,
                                             uid_base=settings.tool_sandbox_uid_base,
                                             uid_count=settings.tool_sandbox_uid_count, checkpoint_seconds=0.25,
                                             hidden=sandbox_hidden())
    except sandbox.SandboxBusy as exc:
        raise TransientJobError(str(exc), code="sandbox_busy") from exc
    except sandbox.SandboxFailed as exc:
        raise PermanentJobError(str(exc), code="sandbox_failed") from exc
    if result["reason"] == "runtime_unavailable":
        raise PermanentJobError(result["message"], code="runtime_unavailable")
    return {"language": row.language, "timeout_seconds": timeout, "limits": dataclasses.asdict(limits), **result}
