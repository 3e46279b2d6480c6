"""Tools of your organization: code with a JSON Schema of its arguments, executed in a sandbox as a job."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited, note_for_audit
from api.routing import CheckedRoute
from pipelines.jobs import lifecycle
from pipelines.tools import registry as tools
from schemas.common import ErrorOut
from schemas.enums import JobKind
from schemas.jobs import JobOut
from schemas.permissions import Permission as P, Principal
from schemas.tools import ToolCreate, ToolExecute, ToolOut, ToolUpdate

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/tools", tags=["tools"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.TOOLS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.TOOLS_WRITE))]
Executor = Annotated[Principal, Depends(Allow(P.TOOLS_EXECUTE))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "No such tool in your organization"}}
INVALID = {422: {"model": ErrorOut, "description": "Invalid input, `schema_invalid` (the JSON Schema) or "
                                                   "`limit_exceeds_maximum`"}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ToolOut,
             responses={**INVALID, 409: {"model": ErrorOut, "description": "`tool_name_taken`"}})
@audited("tool", target=lambda result: result.id,
         details=lambda result: {"name": result.name, "language": result.language})
async def create_tool(body: ToolCreate, session: SessionDep, who: Writer) -> ToolOut:
    """Register a tool: `python`, `bash` or `javascript` code and the JSON Schema (draft 2020-12) of its arguments.

    Run it with `POST /api/v1/tools/{id}/execute`. Its timeout and limits default to the service's and
    can't exceed the service maxima.
    """
    row = await tools.create_tool(session, who.org_id, body)
    await session.commit()
    return ToolOut.from_row(row)


@router.get("", response_model=list[ToolOut])
async def list_tools(session: SessionDep, who: Reader,
                     tag: Annotated[str | None, Query(max_length=50, description="Only tools with this tag.")] = None
                     ) -> list[ToolOut]:
    """The built-in file tools (`builtin: true`), then your organization's tools by name."""
    return await tools.list_tools(session, who.org_id, tag=tag)


@router.get("/{tool_id}", response_model=ToolOut, responses=NOT_FOUND)
async def get_tool(tool_id: uuid.UUID, session: SessionDep, who: Reader) -> ToolOut:
    """One tool, with its source."""
    return await tools.get_tool_out(session, who.org_id, tool_id)


@router.patch("/{tool_id}", response_model=ToolOut,
              responses={**NOT_FOUND, **INVALID, 409: {"model": ErrorOut, "description": "`tool_name_taken`, or "
                                                        "`builtin_tool`: built-in tools can't be changed"}})
@audited("tool", target=lambda tool_id: tool_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_tool(tool_id: uuid.UUID, body: ToolUpdate, session: SessionDep, who: Writer) -> ToolOut:
    """Change some fields; omitted fields stay. Jobs that have not started yet run the new version."""
    row = await tools.update_tool(session, who.org_id, tool_id, body)
    await session.commit()
    return ToolOut.from_row(row)


@router.delete("/{tool_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "`builtin_tool`"}})
@audited("tool", target=lambda tool_id: tool_id, failed_too=True)
async def delete_tool(tool_id: uuid.UUID, session: SessionDep, who: Writer) -> Response:
    """Delete a tool; queued executions of it fail with `tool_not_found`."""
    await tools.delete_tool(session, who.org_id, tool_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{tool_id}/execute", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={**NOT_FOUND,
                        409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"},
                        422: {"model": ErrorOut, "description": "`arguments_invalid` (`details.errors` name each "
                                                                "failing path), `arguments_too_large`, or "
                                                                "`path_outside_workspace` for the file tools"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached"}})
@audited("job", target=lambda result: result.id,
         details=lambda tool_id, tool_name: {"tool_id": str(tool_id), "tool_name": tool_name})
async def execute_tool(tool_id: uuid.UUID, body: ToolExecute, session: SessionDep, who: Executor,
                       response: Response, key: IdempotencyKey = None) -> JobOut:
    """Run a tool with `arguments` (checked against its schema) as an `execute_tool` job.

    Follow it at `GET /api/v1/jobs/{id}/events`: `progress` events carry output chunks in
    `data.output.stdout` / `data.output.stderr`. The job's `result` has `reason` (`exited`, `timeout`,
    `cpu_limit`, `memory_limit`, `output_limit`, `file_size_limit`, `killed`), `exit_code`, `signal`,
    `stdout`, `stderr` (each capped; `stdout_truncated`, `stderr_truncated`), `duration_ms` and
    `isolation` (what separated the run from the service). Cancelling the job kills the tool.
    Built-in file tools return `result.output`.
    """
    payload = await tools.execute_payload(session, who.org_id, tool_id, body)
    job, _ = await lifecycle.submit(session, who, kind=JobKind.EXECUTE_TOOL, payload=payload, total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    note_for_audit(tool_name=payload["tool_name"])
    return JobOut.from_row(job)
