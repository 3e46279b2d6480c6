"""MCP servers of your organization (AgentMem as an MCP client): their configurations, a test that lists their
tools, and tool calls as jobs."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.jobs import lifecycle
from pipelines.mcp import servers
from schemas.common import ErrorOut
from schemas.enums import JobKind
from schemas.jobs import JobOut
from schemas.mcp import McpServerCreate, McpServerOut, McpServerUpdate, McpToolCall, McpToolsOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/mcp/servers", tags=["mcp"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.MCP_READ))]
Writer = Annotated[Principal, Depends(Allow(P.MCP_WRITE))]
Executor = Annotated[Principal, Depends(Allow(P.MCP_EXECUTE))]
ToolName = Annotated[str, Path(min_length=1, max_length=128, description="The tool's name, as the server lists it.")]
NOT_FOUND = {404: {"model": ErrorOut, "description": "`mcp_server_not_found`: no such server in your organization"}}
INVALID = {422: {"model": ErrorOut, "description": "Invalid input, `url_not_allowed` (the outbound policy), "
                                                   "`url_unresolvable` or `limit_exceeds_maximum`"}}
TAKEN = {409: {"model": ErrorOut, "description": "`mcp_server_name_taken`"}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=McpServerOut,
             responses={**INVALID, **TAKEN})
@audited("mcp_server", target=lambda result: result.id,
         details=lambda result: {"name": result.name, "transport": result.transport})
async def create_mcp_server(body: McpServerCreate, session: SessionDep, who: Writer) -> McpServerOut:
    """Register an MCP server: `stdio` (a `command` with `args` and `env`, run by the workers in the tool
    sandbox, with the network only if `network` is true) or `streamable_http` (a `url` with `headers`).

    `env` values and `headers` are stored encrypted and never returned: responses list their names.
    Run `POST /api/v1/mcp/servers/{id}/test` to connect and cache its tools.
    """
    row = await servers.create_server(session, who.org_id, body)
    await session.commit()
    return McpServerOut.from_row(row)


@router.get("", response_model=list[McpServerOut])
async def list_mcp_servers(session: SessionDep, who: Reader) -> list[McpServerOut]:
    """Your organization's MCP servers by name."""
    return [McpServerOut.from_row(r) for r in await servers.list_servers(session, who.org_id)]


@router.get("/{server_id}", response_model=McpServerOut, responses=NOT_FOUND)
async def get_mcp_server(server_id: uuid.UUID, session: SessionDep, who: Reader) -> McpServerOut:
    """One MCP server (no secrets: `env_keys` and `header_names` only)."""
    return McpServerOut.from_row(await servers.get_server(session, who.org_id, server_id))


@router.patch("/{server_id}", response_model=McpServerOut, responses={**NOT_FOUND, **INVALID, **TAKEN})
@audited("mcp_server", target=lambda server_id: server_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_mcp_server(server_id: uuid.UUID, body: McpServerUpdate, session: SessionDep,
                            who: Writer) -> McpServerOut:
    """Change some fields; omitted fields stay, `env` and `headers` are replaced whole. The `version` goes up:
    a running stdio server is replaced at its next call."""
    row = await servers.update_server(session, who.org_id, server_id, body)
    await session.commit()
    return McpServerOut.from_row(row)


@router.delete("/{server_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND)
@audited("mcp_server", target=lambda server_id: server_id, failed_too=True)
async def delete_mcp_server(server_id: uuid.UUID, session: SessionDep, who: Writer) -> Response:
    """Delete an MCP server; queued calls to it fail with `mcp_server_not_found`, agents stop seeing its tools."""
    await servers.delete_server(session, who.org_id, server_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{server_id}/test", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "Idempotency-Key reused with another "
                                                                             "request"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached"}})
@audited("job", target=lambda result: result.id, details=lambda server_id: {"server_id": str(server_id)})
async def test_mcp_server(server_id: uuid.UUID, session: SessionDep, who: Writer, response: Response,
                          key: IdempotencyKey = None) -> JobOut:
    """Connect, initialize and list the server's tools as an `mcp_test` job; the tools are cached on the server.

    The job's `result` has the server's `name`, `version`, `protocol_version`, `tools` (names),
    `tools_count`, `duration_ms` and, for stdio, `isolation`. A failure says why: `mcp_connect_failed`,
    `mcp_command_not_found`, `mcp_unavailable` (retried), `url_not_allowed`, `mcp_http_error`.
    """
    await servers.get_server(session, who.org_id, server_id)
    job, _ = await lifecycle.submit(session, who, kind=JobKind.MCP_TEST, payload={"server_id": str(server_id)},
                                    total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)


@router.get("/{server_id}/tools", response_model=McpToolsOut, responses=NOT_FOUND)
async def list_mcp_server_tools(server_id: uuid.UUID, session: SessionDep, who: Reader) -> McpToolsOut:
    """The server's tools as of its last test (`refreshed_at`); empty with `refreshed_at: null` before one."""
    row = await servers.get_server(session, who.org_id, server_id)
    return McpToolsOut(server_id=row.id, refreshed_at=row.tools_refreshed_at, tools=servers.cached_tools(row))


@router.post("/{server_id}/tools/{tool_name}/call", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={404: {"model": ErrorOut, "description": "`mcp_server_not_found`, or `mcp_tool_not_found` "
                                                                "(not in the cached list)"},
                        409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"},
                        422: {"model": ErrorOut, "description": "`arguments_invalid` (`details.errors` name each "
                                                                "failing path) or `arguments_too_large`"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached"}})
@audited("mcp_server", target=lambda server_id: server_id, failed_too=True,
         details=lambda tool_name: {"tool_name": tool_name[:200]})
async def call_mcp_tool(server_id: uuid.UUID, tool_name: ToolName, body: McpToolCall, session: SessionDep,
                        who: Executor, response: Response, key: IdempotencyKey = None) -> JobOut:
    """Call a tool of the server with `arguments` as an `mcp_call` job.

    Follow it at `GET /api/v1/jobs/{id}/events`: the server's progress notifications arrive as
    `progress` events. The job's `result` has `reason` (`returned`, or `tool_error` when the server
    answered with `isError`), `is_error`, `text` (the text blocks; `text_truncated`), `structured`
    (`structuredContent`), `content` (every block), `duration_ms` and, for stdio, `isolation`.
    Failures: `mcp_timeout`, `mcp_server_died` (the next call restarts the server; retried only for
    tools marked read-only or idempotent), `mcp_unavailable` (retried), `mcp_error`. Cancelling the job
    abandons the call.
    """
    payload = await servers.call_payload(session, who.org_id, server_id, tool_name, body)
    job, _ = await lifecycle.submit(session, who, kind=JobKind.MCP_CALL, payload=payload, total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)
