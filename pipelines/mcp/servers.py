"""MCP server configurations of an organization: create, list, change, delete, and the checks a call request
passes before its job is queued (`pipelines.mcp.call` runs the jobs).

Env values and headers are stored encrypted (core.crypto, as LLM provider keys), each set as one token,
and only their names are kept in clear. A streamable-HTTP URL must pass the outbound policy
(core/outbound.py) when it is stored, and again on every connection.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.crypto import decrypt_secret, encrypt_secret
from core.db import flush_or_raise
from core.errors import AppError, Conflict, InvalidInput, NotFound, PermanentJobError
from core.outbound import check_url
from core.settings import get_settings
from pipelines.tools.registry import check_arguments
from schemas.enums import JobKind, JobStatus
from schemas.mcp import McpServerCreate, McpServerUpdate, McpToolCall, McpToolOut
from schemas.tables import Job, McpServer

LIVE = McpServer.deleted_at.is_(None)


@dataclass(frozen=True)
class ServerSpec:
    """What a worker needs to reach a server, secrets decrypted: built per job, never stored or logged."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    version: int
    transport: str
    command: str | None
    args: tuple[str, ...]
    env: dict[str, str]
    network: bool
    url: str | None
    headers: dict[str, str]
    timeout_seconds: float

    @property
    def pool_key(self) -> tuple[uuid.UUID, int]:
        """Running stdio servers are reused per configuration and version."""
        return self.id, self.version


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an MCP server named {name!r} exists", code="mcp_server_name_taken", details={"name": name})


async def _name_free(session: AsyncSession, org_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None) -> None:
    query = select(McpServer.id).where(McpServer.org_id == org_id, LIVE, func.lower(McpServer.name) == name.lower())
    if exclude is not None:
        query = query.where(McpServer.id != exclude)
    if (await session.execute(query)).first() is not None:
        raise _name_taken(name)


async def _flush(session: AsyncSession, name: str) -> None:
    await flush_or_raise(session, {None: _name_taken(name)})  # a concurrent create with the same name won the race


def check_timeout(timeout_seconds: float | None) -> None:
    """Refuse a call timeout above the service maximum (422 `limit_exceeds_maximum`)."""
    maximum = get_settings().mcp_timeout_max_seconds
    if timeout_seconds is not None and timeout_seconds > maximum:
        raise InvalidInput(f"timeout_seconds is above the service maximum of {maximum:g}",
                           code="limit_exceeds_maximum", details={"maximum": {"timeout_seconds": maximum}})


def _set_secrets(row: McpServer, *, env: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                 which: str) -> None:
    values = env if which == "env" else headers
    token = encrypt_secret(json.dumps(values)) if values else None
    if which == "env":
        row.env_encrypted, row.env_keys = token, sorted(values or {})
    else:
        row.headers_encrypted, row.header_names = token, sorted(values or {})


async def create_server(session: AsyncSession, org_id: uuid.UUID, data: McpServerCreate) -> McpServer:
    """A new server configuration, its URL checked against the outbound policy and its name free."""
    check_timeout(data.timeout_seconds)
    if data.url is not None:
        await check_url(data.url)
    await _name_free(session, org_id, data.name)
    row = McpServer(org_id=org_id, name=data.name, description=data.description, transport=data.transport,
                    command=data.command, args=data.args, url=data.url, network=data.network,
                    timeout_seconds=data.timeout_seconds)
    _set_secrets(row, env=data.env, which="env")
    _set_secrets(row, headers=data.headers, which="headers")
    session.add(row)
    await _flush(session, data.name)
    await session.refresh(row)
    return row


async def list_servers(session: AsyncSession, org_id: uuid.UUID) -> list[McpServer]:
    """The organization's live servers by name."""
    return list((await session.execute(select(McpServer).where(McpServer.org_id == org_id, LIVE).order_by(
        func.lower(McpServer.name), McpServer.id))).scalars())


async def get_server(session: AsyncSession, org_id: uuid.UUID, server_id: uuid.UUID) -> McpServer:
    """A live server of the organization, or NotFound (also for other organizations' servers)."""
    row = (await session.execute(select(McpServer).where(
        McpServer.id == server_id, McpServer.org_id == org_id, LIVE))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"MCP server {server_id} not found", code="mcp_server_not_found",
                       details={"server_id": str(server_id)})
    return row


async def update_server(session: AsyncSession, org_id: uuid.UUID, server_id: uuid.UUID,
                        data: McpServerUpdate) -> McpServer:
    """Change the fields given (each checked as on create); the version goes up, so pools restart the server."""
    row = await get_server(session, org_id, server_id)
    given = data.model_fields_set
    stdio_only = {"command", "args", "env", "network"} & given
    http_only = {"url", "headers"} & given
    if row.transport == "stdio" and http_only or row.transport != "stdio" and stdio_only:
        wrong = sorted(http_only if row.transport == "stdio" else stdio_only)
        raise InvalidInput(f"{', '.join(wrong)} can't be set on a {row.transport} server",
                           details={"fields": wrong})
    if "timeout_seconds" in given:
        check_timeout(data.timeout_seconds)
    if "url" in given:
        await check_url(data.url)
    if "name" in given and data.name.lower() != row.name.lower():
        await _name_free(session, org_id, data.name, exclude=row.id)
    for name in ("name", "description", "command", "args", "network", "url", "timeout_seconds"):
        if name in given:
            setattr(row, name, getattr(data, name))
    if "env" in given:
        _set_secrets(row, env=data.env, which="env")
    if "headers" in given:
        _set_secrets(row, headers=data.headers, which="headers")
    row.version = row.version + 1
    row.updated_at = func.now()
    await _flush(session, row.name)
    await session.refresh(row)
    return row


async def delete_server(session: AsyncSession, org_id: uuid.UUID, server_id: uuid.UUID) -> None:
    """Soft-delete a server (its name becomes free); queued calls to it fail with `mcp_server_not_found`."""
    row = await get_server(session, org_id, server_id)
    row.deleted_at = func.now()
    await session.flush()


def cached_tools(row: McpServer) -> list[McpToolOut]:
    """The tool list stored by the last test or refresh (empty before the first)."""
    return [McpToolOut(**tool) for tool in row.tools or []]


def find_tool(row: McpServer, name: str) -> dict[str, Any] | None:
    """A cached tool by name; None when the cache has no such tool (or there is no cache)."""
    return next((tool for tool in row.tools or [] if tool["name"] == name), None)


async def call_payload(session: AsyncSession, org_id: uuid.UUID, server_id: uuid.UUID, tool_name: str,
                       body: McpToolCall) -> dict[str, Any]:
    """Check a call request (the server exists; with a cached list, the tool is in it and the arguments fit its
    input schema) and return the job payload."""
    row = await get_server(session, org_id, server_id)
    if row.tools is not None:
        tool = find_tool(row, tool_name)
        if tool is None:
            raise NotFound(f"MCP server {row.name!r} has no tool {tool_name!r} (as of its last test)",
                           code="mcp_tool_not_found", details={"server_id": str(server_id), "tool": tool_name})
        check_arguments(tool.get("input_schema") or {"type": "object"}, body.arguments)
    else:
        check_arguments({"type": "object"}, body.arguments)
    return {"server_id": str(server_id), "server_name": row.name, "tool_name": tool_name,
            "arguments": body.arguments}


def _decrypt(row: McpServer, token: str | None, what: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        return json.loads(decrypt_secret(token))
    except AppError as exc:
        raise PermanentJobError(f"the stored {what} of MCP server {row.name!r} can't be decrypted (the encryption "
                                f"key changed since they were saved): set them again with PATCH "
                                f"/api/v1/mcp/servers/{row.id}", code="secret_unreadable") from exc


def spec_of(row: McpServer) -> ServerSpec:
    """The row with its secrets decrypted and its timeout settled (its own, else the default, at most the maximum)."""
    settings = get_settings()
    timeout = min(row.timeout_seconds or settings.mcp_timeout_seconds, settings.mcp_timeout_max_seconds)
    return ServerSpec(id=row.id, org_id=row.org_id, name=row.name, version=row.version, transport=row.transport,
                      command=row.command, args=tuple(row.args or ()), env=_decrypt(row, row.env_encrypted, "env"),
                      network=row.network, url=row.url, headers=_decrypt(row, row.headers_encrypted, "headers"),
                      timeout_seconds=timeout)


async def live_spec(session: AsyncSession, org_id: uuid.UUID, server_id: uuid.UUID) -> tuple[McpServer, ServerSpec]:
    """For a job: the live row and its spec, or a permanent `mcp_server_not_found` (deleted after queueing)."""
    try:
        row = await get_server(session, org_id, server_id)
    except NotFound as exc:
        raise PermanentJobError(f"MCP server {server_id} was deleted before the job ran",
                                code="mcp_server_not_found") from exc
    return row, spec_of(row)


async def due_for_refresh(session: AsyncSession, older_than_seconds: float, limit: int = 100) -> list[McpServer]:
    """Live servers whose tool list is older than `older_than_seconds` (or was never fetched since they were
    made that long ago) and that have no test job waiting or running: the scheduler refreshes them."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    pending = (select(Job.id).where(Job.kind == JobKind.MCP_TEST.value, Job.org_id == McpServer.org_id,
                                    Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                                    Job.payload["server_id"].astext == func.cast(McpServer.id, String))
               .exists())
    query = (select(McpServer).where(LIVE, func.coalesce(McpServer.tools_refreshed_at, McpServer.created_at) < cutoff,
                                     ~pending)
             .order_by(func.coalesce(McpServer.tools_refreshed_at, McpServer.created_at)).limit(limit))
    return list((await session.execute(query)).scalars())
