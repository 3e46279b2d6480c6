"""Schedules: maintenance tasks the scheduler runs for your organization on a cron expression or an interval
(and, for superusers, platform-wide ones)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from pipelines.schedules import store
from schemas.common import ErrorOut
from schemas.permissions import Permission as P, Principal
from schemas.schedules import ScheduleCreate, ScheduleOut, ScheduleUpdate

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/schedules", tags=["schedules"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.SCHEDULES_READ))]
Writer = Annotated[Principal, Depends(Allow(P.SCHEDULES_WRITE))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "`schedule_not_found`, or `unknown_task`"}}
INVALID = {422: {"model": ErrorOut, "description": "`invalid_cron`, `invalid_timezone`, `invalid_interval`, "
                                                   "`invalid_timing` (neither or both of cron and interval), "
                                                   "`invalid_params` or `task_scope`"}}
TAKEN = {409: {"model": ErrorOut, "description": "`schedule_name_taken`"}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScheduleOut,
             responses={**NOT_FOUND, **INVALID, **TAKEN})
@audited("schedule", target=lambda result: result.id,
         details=lambda result: {"name": result.name, "task": result.task, "platform": result.platform})
async def create_schedule(body: ScheduleCreate, session: SessionDep, who: Writer) -> ScheduleOut:
    """Schedule a maintenance task: `cron` (5 fields, in `timezone`) or `interval_seconds` (at least 60).

    Each run is an ordinary `maintenance` job (listed, followed, cancellable, audited) whose payload names
    the schedule. `catch_up` says what a scheduler that was stopped past a due time does: `run_once` or
    `skip`; never more than one run. `platform: true` (superusers, `403 superuser_required` for others)
    schedules a platform task such as `vacuum` for the whole service.
    """
    row = await store.create_schedule(session, who, body)
    await session.commit()
    return ScheduleOut.from_row(row)


@router.get("", response_model=list[ScheduleOut])
async def list_schedules(session: SessionDep, who: Reader,
                         platform: Annotated[bool, Query(description="The platform-wide schedules instead "
                                                                     "(superusers)")] = False) -> list[ScheduleOut]:
    """Your organization's schedules by name, with their next and last runs and the last run's job status.

    The defaults (`default` set) are installed by the scheduler for every organization; edit or disable them.
    """
    return [ScheduleOut.from_row(row, status_) for row, status_ in
            await store.list_schedules(session, who, platform=platform)]


@router.get("/{schedule_id}", response_model=ScheduleOut, responses=NOT_FOUND)
async def get_schedule(schedule_id: uuid.UUID, session: SessionDep, who: Reader) -> ScheduleOut:
    """One schedule, with its last run's job status (`last_job_status`)."""
    row, status_ = await store.get_schedule(session, who, schedule_id)
    return ScheduleOut.from_row(row, status_)


@router.patch("/{schedule_id}", response_model=ScheduleOut, responses={**NOT_FOUND, **INVALID, **TAKEN})
@audited("schedule", target=lambda schedule_id: schedule_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_schedule(schedule_id: uuid.UUID, body: ScheduleUpdate, session: SessionDep,
                          who: Writer) -> ScheduleOut:
    """Change a schedule's name, parameters, timing, `enabled` or `catch_up`; omitted fields stay.

    A new timing, or enabling a disabled schedule, sets `next_run_at` afresh from now (no catch-up).
    """
    row, status_ = await store.update_schedule(session, who, schedule_id, body)
    await session.commit()
    return ScheduleOut.from_row(row, status_)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "`default_schedule`: disable a "
                                                                               "default instead"}})
@audited("schedule", target=lambda schedule_id: schedule_id, failed_too=True)
async def delete_schedule(schedule_id: uuid.UUID, session: SessionDep, who: Writer) -> Response:
    """Delete a schedule you created (a default can only be disabled); its past jobs stay."""
    await store.delete_schedule(session, who, schedule_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
