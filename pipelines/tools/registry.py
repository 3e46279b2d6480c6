"""Tools: the organization's registry (names, JSON Schemas, limits) and the checks an execution request
passes before its job is queued (`pipelines.tools.execute` runs the job)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import jsonschema
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
)
from core.settings import get_settings
from pipelines.tools import workspace
from pipelines.tools.web_search import WebSearchNotConfigured
from pipelines.tools.workspace import BUILTIN_IDS, BUILTINS, Builtin
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


def check_limits(timeout_seconds: float | None, limits: ToolLimits) -> None:
    """Refuse a timeout or limit above the service maximum (422 `limit_exceeds_maximum`)."""
    settings = get_settings()
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


def builtin_out(builtin: Builtin) -> ToolOut:
    """A built-in tool as the API lists it."""
    return ToolOut(id=builtin.id, name=builtin.name, description=builtin.description, json_schema=builtin.json_schema,
                   language="builtin", source=None, tags=list(builtin.tags), timeout_seconds=None,
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


async def create_tool(session: AsyncSession, org_id: uuid.UUID, data: ToolCreate) -> Tool:
    """A new tool, its schema and limits checked and its name free."""
    check_schema(data.json_schema)
    check_limits(data.timeout_seconds, data.limits)
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
    builtins = [builtin_out(b) for b in workspace.enabled_builtins() if tag is None or tag in b.tags]
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
    if tool_id in BUILTIN_IDS and workspace.builtin_enabled(BUILTIN_IDS[tool_id].name):
        return builtin_out(BUILTIN_IDS[tool_id])
    return ToolOut.from_row(await get_tool(session, org_id, tool_id))


def _refuse_builtin(tool_id: uuid.UUID) -> None:
    if tool_id in BUILTIN_IDS:
        raise Conflict(f"{BUILTIN_IDS[tool_id].name!r} is built in: it can't be changed or deleted",
                       code="builtin_tool", details={"tool_id": str(tool_id)})


async def update_tool(session: AsyncSession, org_id: uuid.UUID, tool_id: uuid.UUID, data: ToolUpdate) -> Tool:
    """Change the fields given, checking a new schema, limits and name like a create."""
    _refuse_builtin(tool_id)
    row = await get_tool(session, org_id, tool_id)
    given = data.model_fields_set
    if "json_schema" in given:
        check_schema(data.json_schema)
    check_limits(data.timeout_seconds if "timeout_seconds" in given else None,
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
        if not workspace.builtin_enabled(builtin.name):
            raise WebSearchNotConfigured(f"{builtin.name} is off: the operator has not set AGENTMEM_WEB_SEARCH_URL",
                                         details={"tool_id": str(tool_id)})
        check_arguments(builtin.json_schema, body.arguments)
        workspace.check_arguments(builtin.name, body.arguments)
        return {"tool_id": str(tool_id), "tool_name": builtin.name, "builtin": True, "arguments": body.arguments}
    row = await get_tool(session, org_id, tool_id)
    check_arguments(row.json_schema, body.arguments)
    return {"tool_id": str(tool_id), "tool_name": row.name, "builtin": False, "arguments": body.arguments}
