"""Following job progress: the event sequences behind SSE and WebSocket.

A follower gets the job row first (the truth), then the stream's events after a position that
was read *before* the row, so nothing between the two is missed. Events come through this process's
event hub (core/event_hub.py): one Redis reader per stream, however many follow it. `None` items mean
"no event for a heartbeat interval": the transport sends its keep-alive.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from core import event_hub, events
from core.db import session_scope
from core.errors import InvalidInput
from core.settings import get_settings
from pipelines.jobs.rows import get_job
from schemas.enums import EventType, JobStatus
from schemas.events import JobEvent
from schemas.jobs import JobOut


def check_last_event_id(value: str | None) -> str | None:
    """Validate a Last-Event-ID (a stream entry id) or raise 422 `invalid_last_event_id`."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not events.is_stream_id(value):
        raise InvalidInput("Last-Event-ID must be an event id this API sent (like 1732250000000-0)",
                           code="invalid_last_event_id", details={"last_event_id": str(value)[:100]})
    return value


def snapshot_event(job_out: JobOut, org_id: uuid.UUID) -> JobEvent:
    """The job row as the first event of a follow."""
    return JobEvent(type=EventType.SNAPSHOT, job_id=str(job_out.id), org_id=str(org_id),
                    data=job_out.model_dump(mode="json"), ts=time.time())


def _terminal_from_row(job_out: JobOut, org_id: uuid.UUID) -> JobEvent:
    status = JobStatus(job_out.status)
    data = {"result": job_out.result} if status is JobStatus.SUCCEEDED else {}
    if job_out.error is not None:
        data["error"] = job_out.error.model_dump()
    return JobEvent(type=EventType(status.value), job_id=str(job_out.id), org_id=str(org_id), data=data, ts=time.time())


async def _load(org_id: uuid.UUID, job_id: uuid.UUID) -> JobOut:
    async with session_scope() as session:
        return JobOut.from_row(await get_job(session, org_id, job_id))


async def follow_job(org_id: uuid.UUID, job_id: uuid.UUID, last_event_id: str | None) -> AsyncIterator[JobEvent | None]:
    """Snapshot, then events after `last_event_id` (or after now), ending with the terminal event."""
    key = events.job_stream(job_id)
    position = last_event_id or await events.last_id(key)
    job_out = await _load(org_id, job_id)
    yield snapshot_event(job_out, org_id)
    if JobStatus(job_out.status).terminal:
        async for event in _finish_terminal(key, job_out, org_id, last_event_id, position):
            yield event
        return
    async with aclosing(event_hub.follow(key, position)) as stream:
        async for event in stream:
            if event is None:
                # Quiet for a while: the row may have finished while its event was lost (Redis blip).
                job_out = await _load(org_id, job_id)
                if JobStatus(job_out.status).terminal:
                    async for event in _finish_terminal(key, job_out, org_id, None, position):
                        yield event
                    return
                yield None
                continue
            position = event.id or position
            yield event
            if event.type.terminal:
                return


async def _finish_terminal(key: str, job_out: JobOut, org_id: uuid.UUID, last_event_id: str | None,
                           position: str) -> AsyncIterator[JobEvent]:
    """For a finished job: the events the client missed, ending with the terminal one."""
    if last_event_id is None:
        stored = [e for e in await events.history(key, count=10) if e.type.terminal]
        yield stored[-1] if stored else _terminal_from_row(job_out, org_id)
        return
    missed = [e for e in await events.history(key, count=get_settings().stream_maxlen_job)
              if _after(e.id, position)]
    for event in missed:
        yield event
        if event.type.terminal:
            return
    already_had_terminal = any(e.type.terminal and e.id == last_event_id for e in await events.history(key, count=10))
    if not already_had_terminal:
        yield _terminal_from_row(job_out, org_id)


def _after(entry_id: str | None, position: str) -> bool:
    if entry_id is None:
        return False
    a_ms, a_seq = (int(x) for x in entry_id.split("-"))
    b_ms, b_seq = (int(x) for x in position.split("-"))
    return (a_ms, a_seq) > (b_ms, b_seq)


async def follow_org(org_id: uuid.UUID, last_event_id: str | None) -> AsyncIterator[JobEvent | None]:
    """Every job event of the organization after `last_event_id` (or after now), forever."""
    key = events.org_stream(org_id)
    position = last_event_id or await events.last_id(key)
    yield None  # connected: let the client see the response before the first event
    async with aclosing(event_hub.follow(key, position)) as stream:
        async for event in stream:
            yield event
