"""The audit log of your organization."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.routing import CheckedRoute
from pipelines.accounts import audit
from schemas.common import Page
from schemas.organizations import AuditLogOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1", tags=["audit"], responses=error_responses(
    401, 403, 422, 429, 503, e403="Needs `audit:read` (admins and owners)"))
Filter = Annotated[str | None, Query(max_length=100)]


@router.get("/audit-logs", response_model=Page[AuditLogOut])
async def list_audit_logs(session: SessionDep, who: Annotated[Principal, Depends(Allow(P.AUDIT_READ))],
                          actor: Filter = None,
                          action: Annotated[str | None, Query(max_length=100, description=(
                              "An action name (`delete_memory`, `job.failed`), or a prefix ending in `.`"))] = None,
                          target_type: Filter = None, target_id: Filter = None,
                          result: Literal["success", "failure"] | None = None,
                          since: datetime | None = None, until: datetime | None = None,
                          limit: Annotated[int, Query(ge=1, le=500)] = 100,
                          cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[AuditLogOut]:
    """Every mutating request and every job outcome in your organization, newest first.

    Each entry says who (`actor`), what (`action`), on which `target`, with which `result` and HTTP
    status, from which IP, under which request id. Request bodies and secrets are never recorded.
    """
    rows, next_cursor = await audit.list_audit_logs(session, who.org_id, limit=limit, cursor=cursor, actor=actor,
                                                    action=action, target_type=target_type, target_id=target_id,
                                                    result=result, since=since, until=until)
    return Page[AuditLogOut](items=[AuditLogOut.model_validate(r) for r in rows], next_cursor=next_cursor)
