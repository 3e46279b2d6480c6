"""The audit log: who did what to which target, from where, and how it ended."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Uuid, bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from pipelines.pages import newest_first
from schemas.tables import AuditLog, Job

# Detail keys that could carry a secret are dropped, whatever a caller passes.
_SECRET_WORDS = ("password", "secret", "token", "api_key", "authorization")


def _clean(details: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (details or {}).items() if not any(w in k.lower() for w in _SECRET_WORDS)}


_RECORD = text("""
INSERT INTO audit_logs (id, org_id, actor, action, result, target_type, target_id, status_code, request_id, ip, details)
VALUES (:id, :org_id, :actor, :action, :result, :target_type, :target_id, :status_code, :request_id, :ip, :details)
""").bindparams(bindparam("id", type_=Uuid), bindparam("org_id", type_=Uuid), bindparam("status_code", type_=Integer),
                bindparam("details", type_=JSONB))


async def record(session: AsyncSession, *, org_id: uuid.UUID | None, actor: str, action: str, result: str,
                 target_type: str | None = None, target_id: str | None = None, status_code: int | None = None,
                 request_id: str | None = None, ip: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Write one audit row on the session (the caller commits): one fixed INSERT, every mutating request runs it."""
    await session.execute(_RECORD, {
        "id": uuid.uuid4(), "org_id": org_id, "actor": actor, "action": action, "result": result,
        "target_type": target_type, "target_id": target_id, "status_code": status_code, "request_id": request_id,
        "ip": ip, "details": _clean(details)})


# A job's audit row when it reaches a terminal state, attributed to whoever submitted it: an INSERT … SELECT over
# `{rows}` (jobs rows), so the terminal state and its audit row can be written by one statement (pipelines/jobs/rows:
# finish_recorded and succeed_many run it over their UPDATE … RETURNING).
JOB_OUTCOME_INSERT = """
    INSERT INTO audit_logs (id, org_id, actor, action, result, target_type, target_id, request_id, details)
    SELECT gen_random_uuid(), org_id, coalesce(actor, 'system'), 'job.' || status,
           CASE WHEN status = 'succeeded' THEN 'success' ELSE 'failure' END, 'job', CAST(id AS text), request_id,
           jsonb_build_object('kind', kind, 'attempts', attempts)
           || CASE WHEN error_code IS NOT NULL THEN jsonb_build_object('error_code', error_code) ELSE '{{}}' END
    FROM {rows}"""
_JOB_OUTCOME = text(JOB_OUTCOME_INSERT.format(rows="jobs WHERE id = :id")).bindparams(bindparam("id", type_=Uuid))


async def record_job_outcome(session: AsyncSession, job: Job) -> None:
    """The audit row for `job`, just moved to a terminal state on this session (the caller commits)."""
    await session.execute(_JOB_OUTCOME, {"id": job.id})


async def list_audit_logs(session: AsyncSession, org_id: uuid.UUID, *, limit: int, cursor: str | None,
                          actor: str | None = None, action: str | None = None, target_type: str | None = None,
                          target_id: str | None = None, result: str | None = None,
                          since: datetime | None = None, until: datetime | None = None
                          ) -> tuple[list[AuditLog], str | None]:
    """The organization's audit rows, newest first, filtered; keyset-paginated."""
    query = select(AuditLog).where(AuditLog.org_id == org_id)
    for column, value in ((AuditLog.actor, actor), (AuditLog.target_type, target_type),
                          (AuditLog.target_id, target_id), (AuditLog.result, result)):
        if value is not None:
            query = query.where(column == value)
    if action is not None:
        # `memories.` matches every memories action; an exact name matches itself.
        query = query.where(AuditLog.action.startswith(action) if action.endswith(".") else AuditLog.action == action)
    if since is not None:
        query = query.where(AuditLog.created_at >= since)
    if until is not None:
        query = query.where(AuditLog.created_at < until)
    return await newest_first(session, query, AuditLog, limit=limit, cursor=cursor)
