"""Tools: the organization's registry, and the `execute_tool` job that runs one in the sandbox.

A tool's arguments are checked against its JSON Schema (draft 2020-12) when execution is requested;
the job then runs the tool as it is when the job starts: a registered tool in the sandbox
(`pipelines.sandbox`), a built-in file tool in the worker (`pipelines.workspace`). Output is streamed
as `progress` events (`data.output.stdout` / `.stderr` chunks, at most the kept cap) while it runs.
A redelivered job runs the tool again: a tool's effects are confined to a working directory that
is thrown away, so running it twice leaves nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import stat
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import session_scope
from core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermanentJobError,
    TransientJobError,
)
from core.settings import Settings
from pipelines import sandbox, workspace
from pipelines.runner import JobContext, publish_event
from pipelines.workspace import BUILTIN_IDS, BUILTINS, Builtin
from schemas.enums import EventType
from schemas.tables import Tool
from schemas.tools import (
    MAX_ARGUMENT_BYTES,
    ToolCreate,
    ToolExecute,
    ToolLimits,
    ToolOut,
    ToolUpdate,
)

log = logging.getLogger(__name__)
LIVE = Tool.deleted_at.is_(None)
Validator = jsonschema.Draft202012Validator
LIMIT_FIELDS = {"cpu_seconds": ("tool_cpu_seconds", "tool_cpu_max_seconds"),
                "memory_mb": ("tool_memory_mb", "tool_memory_max_mb"),
                "processes": ("tool_processes", "tool_processes_max"),
                "file_size_mb": ("tool_file_size_mb", "tool_file_size_max_mb"),
                "open_files": ("tool_open_files", "tool_open_files_max")}


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse a JSON Schema that is not a valid draft 2020-12 schema (422 `schema_invalid`)."""
    try:
        Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"json_schema is not a valid JSON Schema: {exc.message}", code="schema_invalid",
                           details={"path": "/" + "/".join(str(p) for p in exc.absolute_path)}) from None


def check_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Refuse arguments the tool's schema rejects (422 `arguments_invalid`, naming each failing path)."""
    if len(json.dumps(arguments)) > MAX_ARGUMENT_BYTES:
        raise InvalidInput(f"arguments are larger than {MAX_ARGUMENT_BYTES} bytes", code="arguments_too_large")
    errors = sorted(Validator(schema).iter_errors(arguments), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        found = [{"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message[:300]}
                 for e in errors[:10]]
        raise InvalidInput(f"arguments don't match the tool's schema: {found[0]['path']}: {found[0]['message']}",
                           code="arguments_invalid", details={"errors": found})


def check_limits(settings: Settings, timeout_seconds: float | None, limits: ToolLimits) -> None:
    """Refuse a timeout or limit above the service maximum (422 `limit_exceeds_maximum`)."""
    over = {}
    if timeout_seconds is not None and timeout_seconds > settings.tool_timeout_max_seconds:
        over["timeout_seconds"] = settings.tool_timeout_max_seconds
    for name, (_, maximum) in LIMIT_FIELDS.items():
        value = getattr(limits, name)
        if value is not None and value > getattr(settings, maximum):
            over[name] = getattr(settings, maximum)
    if over:
        raise InvalidInput(f"above the service maxima: {', '.join(f'{k} (at most {v})' for k, v in over.items())}",
                           code="limit_exceeds_maximum", details={"maximum": over})


def effective_limits(settings: Settings, tool: Tool) -> tuple[float, sandbox.Limits]:
    """The timeout and limits an execution gets: the tool's, else the defaults, never above the maxima."""
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


def sandbox_hidden(settings: Settings) -> tuple[Path, ...]:
    """What a sandboxed tool must not see, even where it sits in a system folder the sandbox shows: the
    data directory, the workspaces, the database's and Redis's socket folders."""
    return (settings.data_dir.absolute(), workspace.workspaces_dir(settings),
            *socket_dirs(settings.database_url), *socket_dirs(settings.redis_url))


def builtin_out(builtin: Builtin) -> ToolOut:
    """A built-in tool as the API lists it."""
    return ToolOut(id=builtin.id, name=builtin.name, description=builtin.description, json_schema=builtin.json_schema,
                   language="builtin", source=None, tags=["builtin", "files"], timeout_seconds=None,
                   limits=ToolLimits(), builtin=True, created_at=None, updated_at=None)


async def _name_free(session: AsyncSession, org_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None) -> None:
    if name.lower() in BUILTINS:
        raise Conflict(f"{name!r} is the name of a built-in tool", code="tool_name_taken", details={"name": name})
    query = select(Tool.id).where(Tool.org_id == org_id, LIVE, func.lower(Tool.name) == name.lower())
    if exclude is not None:
        query = query.where(Tool.id != exclude)
    if (await session.execute(query)).first() is not None:
        raise Conflict(f"a tool named {name!r} exists", code="tool_name_taken", details={"name": name})


async def _flush(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create with the same name won the race
        await session.rollback()
        raise Conflict(f"a tool named {name!r} exists", code="tool_name_taken", details={"name": name}) from exc


async def create_tool(session: AsyncSession, settings: Settings, org_id: uuid.UUID, data: ToolCreate) -> Tool:
    """A new tool, its schema and limits checked and its name free."""
    check_schema(data.json_schema)
    check_limits(settings, data.timeout_seconds, data.limits)
    await _name_free(session, org_id, data.name)
    row = Tool(org_id=org_id, name=data.name, description=data.description, json_schema=data.json_schema,
               language=data.language, source=data.source, tags=data.tags, timeout_seconds=data.timeout_seconds,
               limits=data.limits.model_dump(exclude_none=True))
    session.add(row)
    await _flush(session, data.name)
    await session.refresh(row)
    return row


async def list_tools(session: AsyncSession, org_id: uuid.UUID, *, tag: str | None = None) -> list[ToolOut]:
    """The built-in tools, then the organization's by name; with `tag`, only tools carrying it."""
    query = select(Tool).where(Tool.org_id == org_id, LIVE).order_by(func.lower(Tool.name), Tool.id)
    if tag is not None:
        query = query.where(Tool.tags.any(tag))
    builtins = [builtin_out(b) for b in BUILTINS.values() if tag is None or tag in ("builtin", "files")]
    return builtins + [ToolOut.from_row(r) for r in (await session.execute(query)).scalars()]


async def get_tool(session: AsyncSession, org_id: uuid.UUID, tool_id: uuid.UUID) -> Tool:
    """A live tool of the organization, or NotFound (also for other organizations' tools)."""
    row = (await session.execute(select(Tool).where(Tool.id == tool_id, Tool.org_id == org_id, LIVE))
           ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"tool {tool_id} not found", details={"tool_id": str(tool_id)})
    return row


async def get_tool_out(session: AsyncSession, org_id: uuid.UUID, tool_id: uuid.UUID) -> ToolOut:
    """A built-in or organization tool as the API shows it."""
    if tool_id in BUILTIN_IDS:
        return builtin_out(BUILTIN_IDS[tool_id])
    return ToolOut.from_row(await get_tool(session, org_id, tool_id))


def _refuse_builtin(tool_id: uuid.UUID) -> None:
    if tool_id in BUILTIN_IDS:
        raise Conflict(f"{BUILTIN_IDS[tool_id].name!r} is built in: it can't be changed or deleted",
                       code="builtin_tool", details={"tool_id": str(tool_id)})


async def update_tool(session: AsyncSession, settings: Settings, org_id: uuid.UUID, tool_id: uuid.UUID,
                      data: ToolUpdate) -> Tool:
    """Change the fields given, checking a new schema, limits and name like a create."""
    _refuse_builtin(tool_id)
    row = await get_tool(session, org_id, tool_id)
    given = data.model_fields_set
    if "json_schema" in given:
        check_schema(data.json_schema)
    check_limits(settings, data.timeout_seconds if "timeout_seconds" in given else None,
                 data.limits if "limits" in given else ToolLimits())
    if "name" in given and data.name.lower() != row.name.lower():
        await _name_free(session, org_id, data.name, exclude=row.id)
    for name in ("name", "description", "json_schema", "language", "source", "tags", "timeout_seconds"):
        if name in given:
            setattr(row, name, getattr(data, name))
    if "limits" in given:
        row.limits = data.limits.model_dump(exclude_none=True)
    row.updated_at = func.now()
    await _flush(session, row.name)
    await session.refresh(row)
    return row


async def delete_tool(session: AsyncSession, org_id: uuid.UUID, tool_id: uuid.UUID) -> None:
    """Soft-delete a tool (its name becomes free); jobs already queued for it fail with `tool_not_found`."""
    _refuse_builtin(tool_id)
    row = await get_tool(session, org_id, tool_id)
    row.deleted_at = func.now()
    await session.flush()


async def execute_payload(session: AsyncSession, org_id: uuid.UUID, tool_id: uuid.UUID,
                          body: ToolExecute) -> dict[str, Any]:
    """Check an execution request (the tool exists, its arguments fit its schema) and return the job payload."""
    if tool_id in BUILTIN_IDS:
        builtin = BUILTIN_IDS[tool_id]
        check_arguments(builtin.json_schema, body.arguments)
        workspace.check_arguments(builtin.name, body.arguments)
        return {"tool_id": str(tool_id), "tool_name": builtin.name, "builtin": True, "arguments": body.arguments}
    row = await get_tool(session, org_id, tool_id)
    check_arguments(row.json_schema, body.arguments)
    return {"tool_id": str(tool_id), "tool_name": row.name, "builtin": False, "arguments": body.arguments}


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
    job, settings = ctx.job, ctx.settings
    payload = job.payload
    tool_id = uuid.UUID(payload["tool_id"])
    head = {"tool_id": str(tool_id), "tool_name": payload["tool_name"]}
    if payload.get("builtin"):
        name = BUILTIN_IDS[tool_id].name
        output = await asyncio.to_thread(workspace.run_builtin, settings, job.org_id, name, payload["arguments"])
        return {**head, "builtin": True, "reason": "exited", "exit_code": 0, "output": output}
    plan = await asyncio.to_thread(sandbox.isolation_plan)
    warn_if_data_dir_exposed(settings.data_dir)
    if not plan["net"] and settings.tool_require_network_isolation:
        raise PermanentJobError("this worker can't give tools a network namespace (unprivileged container or "
                                "kernel without namespaces), and AGENTMEM_TOOL_REQUIRE_NETWORK_ISOLATION is on: "
                                "see the README's sandbox section", code="sandbox_unavailable")
    async with session_scope() as session:
        row = (await session.execute(select(Tool).where(Tool.id == tool_id, Tool.org_id == job.org_id, LIVE))
               ).scalar_one_or_none()
    if row is None:
        raise PermanentJobError(f"tool {tool_id} was deleted before the job ran", code="tool_not_found")
    timeout, limits = effective_limits(settings, row)
    run = sandbox.ToolRun(name=row.name, language=row.language, source=row.source, arguments=payload["arguments"],
                          timeout_seconds=timeout, limits=limits, output_cap_bytes=settings.tool_output_cap_bytes,
                          output_limit_bytes=settings.tool_output_limit_bytes)
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

    try:
        result = await sandbox.run_sandboxed(run, sink=buffer.add, checkpoint=checkpoint,
                                             uid_base=settings.tool_sandbox_uid_base,
                                             uid_count=settings.tool_sandbox_uid_count, checkpoint_seconds=0.25,
                                             hidden=sandbox_hidden(settings))
    except sandbox.SandboxBusy as exc:
        raise TransientJobError(str(exc), code="sandbox_busy") from exc
    except sandbox.SandboxFailed as exc:
        raise PermanentJobError(str(exc), code="sandbox_failed") from exc
    await flush()
    if result["reason"] == "runtime_unavailable":
        raise PermanentJobError(result["message"], code="runtime_unavailable")
    return {**head, "builtin": False, "language": row.language, "timeout_seconds": timeout,
            "limits": dataclasses.asdict(limits), **result}
