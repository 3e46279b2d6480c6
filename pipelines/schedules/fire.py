"""Firing due schedules: each due time runs at most once, however many schedulers run at once.

For each enabled schedule whose `next_run_at` has come, one transaction moves `next_run_at` to the
schedule's next due time after now with a compare-and-swap on the value read (`WHERE next_run_at =
<read>`), and only if that UPDATE found the row does it submit the run: a `maintenance` job keyed
`schedule:<id>:<due time>` with payload `{"task", "params", "schedule_id"}`. Of two schedulers that read
the same due row, the second's UPDATE waits for the first's commit, then matches nothing; even a double
submit would find the first job by its key. A rollback undoes both, and the next pass tries again.

Catch-up: a run that is late (a whole period went by unseen, or more than `schedule_grace_seconds`
behind, as after a stopped scheduler) runs once with `catch_up: run_once`, not at all with `skip`; the
periods missed in between never run, and `next_run_at` moves to the next due time in the future.
Platform-wide schedules' jobs are recorded in the platform's first organization (the oldest live one:
normally the organization `agentmem up` bootstraps), whose admins see them in their job list.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import AppError, infrastructure_errors
from pipelines.jobs import lifecycle
from pipelines.maintenance.registry import TASKS
from pipelines.schedules import timing
from schemas.enums import JobKind
from schemas.tables import Organization, Schedule

log = logging.getLogger(__name__)


async def platform_org(session: AsyncSession) -> uuid.UUID | None:
    """The organization platform-wide runs are recorded in: the oldest live one."""
    return (await session.execute(select(Organization.id).where(Organization.deleted_at.is_(None))
                                  .order_by(Organization.created_at, Organization.id).limit(1))).scalar_one_or_none()


async def due_schedules(session: AsyncSession, now: datetime, limit: int) -> list[Schedule]:
    """Enabled schedules due by `now` (oldest due first), of live organizations or platform-wide."""
    live = select(Organization.id).where(Organization.id == Schedule.org_id, Organization.deleted_at.is_(None))
    return list((await session.execute(
        select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now,
                               or_(Schedule.org_id.is_(None), live.exists()))
        .order_by(Schedule.next_run_at, Schedule.id).limit(limit))).scalars())


def run_payload(row: Schedule) -> dict[str, Any]:
    """What the scheduled job runs: the task, its parameters, the schedule (and platform-wide, `platform`)."""
    payload: dict[str, Any] = {"task": row.task, "params": row.params, "schedule_id": str(row.id)}
    if row.org_id is None:
        payload["platform"] = True
    return payload


async def fire_one(session: AsyncSession, row: Schedule, now: datetime, grace_seconds: float) -> str:
    """Advance one due schedule (compare-and-swap) and submit its run; what happened: `ran`, `skipped` (late,
    catch-up `skip`), `lost` (another scheduler fired it first) or `invalid` (its task is gone)."""
    due = row.next_run_at
    upcoming, late = timing.advance(row.cron, row.timezone, row.interval_seconds, due, now, grace_seconds)
    task = TASKS.get(row.task)
    run = task is not None and (not late or row.catch_up == "run_once")
    values: dict[str, Any] = {"next_run_at": upcoming, "updated_at": func.now()}
    if run:
        values["last_run_at"] = now
    swapped = (await session.execute(
        update(Schedule).where(Schedule.id == row.id, Schedule.next_run_at == due, Schedule.enabled.is_(True))
        .values(**values).returning(Schedule.id))).first()
    if swapped is None:
        await session.rollback()
        return "lost"
    outcome = "ran" if run else ("invalid" if task is None else "skipped")
    if run:
        org_id = row.org_id or await platform_org(session)
        if org_id is None:
            outcome = "skipped"
        else:
            job, _ = await lifecycle.submit_scheduled(session, org_id, kind=JobKind.MAINTENANCE,
                                                      payload=run_payload(row),
                                                      key=f"schedule:{row.id}:{due.isoformat()}")
            await session.execute(update(Schedule).where(Schedule.id == row.id).values(last_job_id=job.id))
    if task is None:
        log.warning("schedule %s names no maintenance task %r: not run", row.id, row.task)
    await lifecycle.commit(session)  # the new next_run_at and the job together, or neither
    if late:
        log.info("schedule %s was due at %s: %s (catch-up %s)", row.id, due.isoformat(), outcome, row.catch_up)
    return outcome


async def fire_due(session: AsyncSession, *, grace_seconds: float, limit: int = 200,
                   now: datetime | None = None) -> dict[str, int]:
    """Fire every schedule due now (up to `limit`); counts of what happened to them."""
    now = now or datetime.now(UTC)
    counts = {"ran": 0, "skipped": 0, "lost": 0, "invalid": 0, "failed": 0}
    rows = await due_schedules(session, now, limit)
    await session.commit()
    session.expunge_all()  # plain snapshots from here: a rollback below must not expire what was read
    for row in rows:
        try:
            counts[await fire_one(session, row, now, grace_seconds)] += 1
        except infrastructure_errors():
            raise  # the database or Redis is down: the whole pass stops, the next one retries
        except AppError as exc:  # a refused submit (a reused key with another payload): the next pass retries
            await session.rollback()
            log.warning("schedule %s not fired: %s", row.id, exc)
            counts["failed"] += 1
        except Exception:  # one broken schedule must not keep the others from running
            await session.rollback()
            log.exception("schedule %s not fired", row.id)
            counts["failed"] += 1
    return counts

