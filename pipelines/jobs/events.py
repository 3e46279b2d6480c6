"""Publishing a job's events: hints for followers, published after the row they describe is committed."""

from __future__ import annotations

import logging
from typing import Any

from core import events
from core.errors import infrastructure_errors
from schemas.enums import EventType, JobStatus
from schemas.tables import Job

log = logging.getLogger(__name__)

OUTCOME_EVENTS = {JobStatus.SUCCEEDED.value: EventType.SUCCEEDED, JobStatus.FAILED.value: EventType.FAILED,
                  JobStatus.CANCELLED.value: EventType.CANCELLED}


async def publish_event(type_: EventType, job: Job, data: dict[str, Any], *, to_org: bool = True) -> None:
    """Publish a job event; a Redis failure is logged, not raised."""
    # Events are hints and the row is the truth: a Redis blip must not fail work already committed.
    try:
        await events.publish(type_, job_id=job.id, org_id=job.org_id, data=data, to_org=to_org)
    except infrastructure_errors() as exc:
        log.warning("could not publish %s event: %s", type_.value, exc)


async def publish_events(batch: list[tuple[EventType, Job, dict[str, Any]]]) -> None:
    """Publish several jobs' events in one Redis round trip, in order; a Redis failure is logged, not raised."""
    if not batch:
        return
    try:
        await events.publish_many([(type_, job.id, job.org_id, data) for type_, job, data in batch])
    except infrastructure_errors() as exc:
        log.warning("could not publish %d events: %s", len(batch), exc)


def outcome(job: Job) -> tuple[EventType, Job, dict[str, Any]]:
    """The terminal event of a finished job: its result, or its error's code and message."""
    # A cancelled job's result, when it has one, says what it kept (an ingest's memories stored before).
    data: dict[str, Any] = {"result": job.result} if job.result is not None else {}
    if job.error_code:
        data["error"] = {"code": job.error_code, "message": job.error_message}
    return OUTCOME_EVENTS[job.status], job, data


async def publish_outcome(job: Job) -> None:
    """The terminal event of a finished job."""
    await publish_event(*outcome(job))
