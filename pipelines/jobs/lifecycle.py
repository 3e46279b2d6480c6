"""A job's life from the outside: submitted with the work that asks for it, sent once that is
committed, and concluded (row, audit row, commit, outcome event) in one place.

Submitting records the new job on the session (an outbox); `commit` commits the session and then
sends the outbox's messages and publishes their `queued` events. A job whose transaction rolls back
is never sent; a job committed but not sent (a crash, a Redis outage between the two) is re-sent by
the scheduler. Workers move jobs through their states with pipelines/jobs/runner.py, which concludes
them here too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core import queue, timing
from core.db import session_scope
from core.errors import infrastructure_errors
from core.logging import request_id_var
from core.settings import get_settings
from pipelines.accounts import audit, limits
from pipelines.jobs import rows
from pipelines.jobs.events import publish_event, publish_outcome
from schemas.enums import EventType, JobKind, JobStatus
from schemas.permissions import Principal
from schemas.tables import Job

log = logging.getLogger(__name__)

OUTBOX = "agentmem.jobs.outbox"


async def submit(session: AsyncSession, who: Principal, *, kind: JobKind, payload: dict[str, Any], total: int,
                 key: str | None) -> tuple[Job, bool]:
    """Check quotas and add a queued job row to the session, its message to the outbox; (job, created).

    A replayed Idempotency-Key costs no quota and sends nothing: it returns the job it first created.
    """
    if not await rows.key_used(session, who.org_id, key):
        with timing.stage("quota"):  # Server-Timing: includes the wait for the organization's quota lock
            await limits.check_job_quotas(session, who.org_id, kind, total)
    job, created = await rows.submit(session, org_id=who.org_id, kind=kind, payload=payload, total=total,
                                     idempotency_key=key, request_id=request_id_var.get(),
                                     max_attempts=get_settings().job_max_retries + 1, actor=who.actor)
    if created:
        session.info.setdefault(OUTBOX, []).append(job)
    return job, created


async def commit(session: AsyncSession) -> None:
    """Commit the session, then send the messages of the jobs it submitted and publish `queued` for each."""
    try:
        with timing.stage("commit"):
            await session.commit()  # 1. the rows are durable and visible to workers
    except BaseException:
        session.info.pop(OUTBOX, None)
        raise
    for job in session.info.pop(OUTBOX, []):
        try:
            with timing.stage("send"):
                await asyncio.to_thread(queue.send, job.kind, job.id)  # 2. then the message: the job id only
        except infrastructure_errors() as exc:
            # The row is safe; the scheduler re-sends queued jobs whose message never arrived.
            log.warning("job %s stored but not sent yet (%s); the scheduler will send it", job.id, exc)
        await publish_event(EventType.QUEUED, job, {"kind": job.kind, "total": job.progress_total})


async def conclude(session: AsyncSession, job: Job) -> None:
    """For a job just moved to a terminal state on this session: its audit row, commit, then its outcome event."""
    await audit.record_job_outcome(session, job)
    await commit(session)
    await publish_outcome(job)


async def conclude_many(session: AsyncSession, jobs: list[Job]) -> None:
    """`conclude` for several jobs just moved to a terminal state on this session: one flush, one commit."""
    await audit.record_job_outcomes(session, jobs)
    await commit(session)
    for job in jobs:
        await publish_outcome(job)


async def cancel(session: AsyncSession, org_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """Cancel a queued job at once (concluded), or ask a running one to stop at its next checkpoint."""
    job, cancelled_now = await rows.cancel(session, org_id, job_id)
    if cancelled_now:
        await conclude(session, job)
    else:
        await session.commit()
    return job


async def finish(job_id: uuid.UUID, status: JobStatus, **fields: Any) -> Job | None:
    """Move a running job to `status` and conclude it; None if it was no longer running."""
    async with session_scope() as session:
        row = await rows.finish(session, job_id, status, **fields)
        if row is None:
            return None
        await conclude(session, row)
    return row
