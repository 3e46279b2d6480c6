"""Schedules as the API sees them: create, list, read, change and delete, per organization or platform-wide.

A schedule's task and parameters are checked with the maintenance registry (a task unknown is 404
`unknown_task`, parameters it refuses 422 `invalid_params`), its timing with timing.py. Where the task
works decides where it may be scheduled: an organization schedule runs an organization task, a
platform-wide one (superusers) a platform task (422 `task_scope` otherwise). A default the service
installed can be edited or disabled but not deleted (409 `default_schedule`): so it is never re-installed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import flush_or_raise
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from pipelines.maintenance.registry import check_params, get_task
from pipelines.schedules import timing
from schemas.inputs import name_key
from schemas.permissions import Principal
from schemas.schedules import ScheduleCreate, ScheduleUpdate
from schemas.tables import Job, Schedule


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a schedule called {name!r} exists", code="schedule_name_taken", details={"name": name})


def require_superuser(who: Principal) -> None:
    """Platform-wide schedules and platform tasks are the service administrators' (403 `superuser_required`)."""
    if not who.superuser:
        raise Forbidden("only service administrators (superusers) manage platform-wide schedules",
                        code="superuser_required")


def check_scope(task_name: str, platform: bool) -> None:
    """Refuse (422 `task_scope`) an organization schedule of a platform task, and the converse."""
    task = get_task(task_name)
    wanted = "platform" if platform else "organization"
    if wanted not in task.scopes:
        raise InvalidInput(f"{task.name} can't be scheduled {'platform-wide' if platform else 'per organization'}",
                           code="task_scope", details={"task": task.name, "scopes": sorted(task.scopes)})


def _visible(who: Principal, platform: bool) -> Any:
    return Schedule.org_id.is_(None) if platform else Schedule.org_id == who.org_id


async def list_schedules(session: AsyncSession, who: Principal, *, platform: bool = False) -> list[tuple[Schedule,
                                                                                                       str | None]]:
    """The organization's schedules (or the platform-wide ones, superusers) by name, each with its last job's status."""
    if platform:
        require_superuser(who)
    rows = await session.execute(
        select(Schedule, Job.status).outerjoin(Job, Job.id == Schedule.last_job_id)
        .where(_visible(who, platform)).order_by(Schedule.name_key, Schedule.id))
    return [(row[0], row[1]) for row in rows.all()]


async def get_schedule(session: AsyncSession, who: Principal, schedule_id: uuid.UUID) -> tuple[Schedule, str | None]:
    """One schedule of the caller's organization, or a platform-wide one for a superuser; 404 otherwise."""
    row = (await session.execute(
        select(Schedule, Job.status).outerjoin(Job, Job.id == Schedule.last_job_id).where(Schedule.id == schedule_id)
    )).first()
    if row is None or not (row[0].org_id == who.org_id or (row[0].org_id is None and who.superuser)):
        raise ScheduleNotFound(f"schedule {schedule_id} not found", details={"schedule_id": str(schedule_id)})
    return row[0], row[1]


async def _flush(session: AsyncSession, name: str) -> None:
    await flush_or_raise(session, {"uq_schedules_name": _name_taken(name)})


async def create_schedule(session: AsyncSession, who: Principal, data: ScheduleCreate) -> Schedule:
    """A new schedule, first due at its next time from now."""
    if data.platform:
        require_superuser(who)
    check_scope(data.task, data.platform)
    task = get_task(data.task)
    params = check_params(task, data.params)
    timing.check_timing(data.cron, data.timezone, data.interval_seconds)
    org_id = None if data.platform else who.org_id
    taken = await session.execute(select(Schedule.id).where(
        Schedule.org_id.is_(None) if org_id is None else Schedule.org_id == org_id,
        Schedule.name_key == name_key(data.name)))
    if taken.first():
        raise _name_taken(data.name)
    row = Schedule(org_id=org_id, name=data.name, name_key=name_key(data.name), task=task.name, params=params,
                   cron=data.cron, timezone=data.timezone, interval_seconds=data.interval_seconds,
                   enabled=data.enabled, catch_up=data.catch_up, created_by=who.actor,
                   next_run_at=timing.first_run(data.cron, data.timezone, data.interval_seconds, datetime.now(UTC)))
    session.add(row)
    await _flush(session, data.name)
    await session.refresh(row)
    return row


async def update_schedule(session: AsyncSession, who: Principal, schedule_id: uuid.UUID,
                          data: ScheduleUpdate) -> tuple[Schedule, str | None]:
    """Change a schedule; a new timing, or enabling it again, sets its next run from now (no catch-up)."""
    row, status = await get_schedule(session, who, schedule_id)
    if row.org_id is None:
        require_superuser(who)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "params", "timezone", "enabled", "catch_up"):
        if changes.get(field, None) is None and field in changes:
            raise InvalidInput(f"{field} can't be null", code="invalid_input", details={"field": field})
    cron, interval = row.cron, row.interval_seconds
    if "cron" in changes and "interval_seconds" in changes:
        cron, interval = changes["cron"], changes["interval_seconds"]
    elif "cron" in changes:  # a cron expression replaces the interval
        cron, interval = changes["cron"], None if changes["cron"] is not None else interval
    elif "interval_seconds" in changes:
        cron, interval = None if changes["interval_seconds"] is not None else cron, changes["interval_seconds"]
    tz = changes.get("timezone", row.timezone)
    timing.check_timing(cron, tz, interval)
    if "params" in changes:
        row.params = check_params(get_task(row.task), changes["params"])
    if "name" in changes and name_key(changes["name"]) != row.name_key:
        taken = await session.execute(select(Schedule.id).where(
            Schedule.org_id.is_(None) if row.org_id is None else Schedule.org_id == row.org_id,
            Schedule.name_key == name_key(changes["name"]), Schedule.id != row.id))
        if taken.first():
            raise _name_taken(changes["name"])
        row.name, row.name_key = changes["name"], name_key(changes["name"])
    retimed = (cron, interval, tz) != (row.cron, row.interval_seconds, row.timezone)
    enabling = changes.get("enabled") is True and not row.enabled
    row.cron, row.interval_seconds, row.timezone = cron, interval, tz
    row.enabled = changes.get("enabled", row.enabled)
    row.catch_up = changes.get("catch_up", row.catch_up)
    if retimed or enabling:
        row.next_run_at = timing.first_run(cron, tz, interval, datetime.now(UTC))
    row.updated_at = func.now()
    await _flush(session, row.name)
    await session.refresh(row)
    return row, status


async def delete_schedule(session: AsyncSession, who: Principal, schedule_id: uuid.UUID) -> None:
    """Delete a schedule the caller created (defaults: disable them instead, 409 `default_schedule`)."""
    row, _ = await get_schedule(session, who, schedule_id)
    if row.org_id is None:
        require_superuser(who)
    if row.default_name is not None:
        raise Conflict("a default schedule can't be deleted (it would come back): disable it instead",
                       code="default_schedule", details={"schedule_id": str(row.id), "default": row.default_name})
    await session.delete(row)
    await session.flush()
