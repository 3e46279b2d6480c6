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

from core import events, queue, timing
from core.db import autocommit_scope
from core.errors import Forbidden, TooManyRequests, infrastructure_errors
from core.logging import request_id_var
from core.redis import get_redis
from core.settings import get_settings
from pipelines.accounts import audit, limits
from pipelines.jobs import rows
from pipelines.jobs.events import outcome, publish_events, publish_outcome
from schemas.enums import EventType, JobKind, JobStatus
from schemas.permissions import Principal
from schemas.tables import Job

log = logging.getLogger(__name__)

OUTBOX = "agentmem.jobs.outbox"


async def submit(session: AsyncSession, who: Principal, *, kind: JobKind, payload: dict[str, Any], total: int,
                 key: str | None, max_attempts: int | None = None) -> tuple[Job, bool]:
    """Add a queued job row to the session and check quotas, its message to the outbox; (job, created).

    A replayed Idempotency-Key costs no quota and sends nothing: it returns the job it first created.
    `max_attempts` defaults to `job_max_retries + 1` (webhook deliveries have their own).
    """
    job, created = await rows.submit(session, org_id=who.org_id, kind=kind, payload=payload, total=total,
                                     idempotency_key=key, request_id=request_id_var.get(),
                                     max_attempts=max_attempts or get_settings().job_max_retries + 1,
                                     actor=who.actor)
    if created:  # a replay returned the job it first created, before any count
        try:
            with timing.stage("quota"):  # Server-Timing: includes the wait for the organization's quota lock
                await limits.check_job_quotas(session, who.org_id, kind, total)
        except (TooManyRequests, Forbidden):
            # Refused: the row goes, so a caller that commits what it queued before (a sweep) can't keep it.
            await rows.discard(session, job.id)
            raise
        session.info.setdefault(OUTBOX, []).append(job)
    return job, created


async def submit_scheduled(session: AsyncSession, org_id: uuid.UUID, *, kind: JobKind, payload: dict[str, Any],
                           key: str, max_attempts: int | None = None) -> tuple[Job, bool]:
    """A job the service starts itself (scheduled maintenance) for an organization: like `submit`, without the
    quotas a request is held to, its actor `scheduler`; `key` makes a repeated pass find the same job."""
    job, created = await rows.submit(session, org_id=org_id, kind=kind, payload=payload, total=1, idempotency_key=key,
                                     request_id=None, max_attempts=max_attempts or get_settings().job_max_retries + 1,
                                     actor="scheduler")
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
    outbox = session.info.pop(OUTBOX, [])
    if outbox:
        await _send(outbox)


async def _send(outbox: list[Job]) -> None:
    """The jobs' messages and their `queued` events, all in one Redis round trip (2. the message: the job id only)."""
    try:
        if not queue.send_ready():
            await asyncio.to_thread(queue.prepare_send)
        with timing.stage("send"):
            async with get_redis().pipeline(transaction=False) as pipe:
                for job in outbox:
                    # The event first: a worker's `started` can't overtake it.
                    events.add_publish(pipe, EventType.QUEUED, job_id=job.id, org_id=job.org_id,
                                       data={"kind": job.kind, "total": job.progress_total})
                    for command in queue.send_commands(job.kind, job.id):
                        pipe.execute_command(*command)
                # Each command's own error (a failed script) is checked below, not raised here.
                results = await pipe.execute(raise_on_error=False)
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed
    except infrastructure_errors() as exc:
        # The rows are safe; the scheduler re-sends queued jobs whose message never arrived.
        log.warning("%d job(s) stored but not sent yet (%s); the scheduler will send them", len(outbox), exc)


async def conclude(session: AsyncSession, job: Job) -> None:
    """For a job just moved to a terminal state on this session: its audit row, commit, then its outcome event."""
    await audit.record_job_outcome(session, job)
    await commit(session)
    await publish_outcome(job)


async def conclude_many(session: AsyncSession, jobs: list[Job]) -> None:
    """`conclude` for several jobs moved to a terminal state on this session with their audit rows
    (rows.succeed_many writes both): one commit, then their outcome events in one round trip."""
    await commit(session)
    await publish_events([outcome(job) for job in jobs])  # one round trip for all


async def cancel(session: AsyncSession, org_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """Cancel a queued job at once (concluded), or ask a running one to stop at its next checkpoint."""
    job, cancelled_now = await rows.cancel(session, org_id, job_id)
    if cancelled_now:
        await conclude(session, job)
    else:
        await session.commit()
    return job


async def finish(job_id: uuid.UUID, status: JobStatus, **fields: Any) -> Job | None:
    """Move a running job to `status` and conclude it; None if it was no longer running.

    The row and its audit row are one statement in one round trip (no BEGIN/COMMIT): the whole of a
    small job's conclusion. A finished job submits nothing, so there is no outbox to send.
    """
    async with autocommit_scope() as session:
        row = await rows.finish_recorded(session, job_id, status, **fields)
    if row is not None:
        await publish_outcome(row)
    return row
