"""Thin route → job row → message: the one path by which the API starts background work."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import infrastructure_errors
from core.logging import request_id_var
from core.settings import get_settings
from pipelines.jobs import rows as jobs
from pipelines.accounts import limits
from pipelines.jobs.runner import publish_event
from schemas.enums import EventType, JobKind
from schemas.permissions import Principal
from schemas.tables import Job
from workers.actors import send_job

log = logging.getLogger(__name__)


async def start_job(session: AsyncSession, who: Principal, *, kind: JobKind, payload: dict[str, Any], total: int,
                    key: str | None) -> tuple[Job, bool]:
    """Check quotas, commit a queued job row, then send its message; a replayed Idempotency-Key sends nothing."""
    settings = get_settings()
    if not await jobs.key_used(session, who.org_id, key):  # a replay costs no quota
        await limits.check_job_quotas(session, who.org_id, kind, total)
    job, created = await jobs.submit(session, org_id=who.org_id, kind=kind, payload=payload, total=total,
                                     idempotency_key=key, request_id=request_id_var.get(),
                                     max_attempts=settings.job_max_retries + 1, actor=who.actor)
    await session.commit()  # 1. the row is durable and visible to workers
    if created:
        try:
            await asyncio.to_thread(send_job, job)  # 2. then the message: the job id only
        except infrastructure_errors() as exc:
            # The row is safe; the scheduler re-sends queued jobs whose message never arrived.
            log.warning("job %s stored but not sent yet (%s); the scheduler will send it", job.id, exc)
        await publish_event(EventType.QUEUED, job, {"kind": job.kind, "total": total})
    return job, created
