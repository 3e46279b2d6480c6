"""Jobs: read, list, cancel, and follow live over Server-Sent Events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, status
from fastapi.responses import StreamingResponse

from api.deps import Allow, AllowStream, IdempotencyKey, SessionDep, can_follow
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import CheckedRoute
from api.streaming import sse_response, streams
from core.errors import NotFound
from pipelines.accounts import auth
from pipelines.jobs import follow as progress, lifecycle, rows as jobs
from schemas.common import ErrorOut, Page
from schemas.enums import JobKind, JobStatus
from schemas.jobs import JobOut, PublicJobKind
from schemas.organizations import StreamTokenIn, StreamTokenOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1", tags=["jobs"], responses=error_responses(
    401, 403, 404, 422, 429, 503, e404="No such job in your organization"))

LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=64,
                                           description="Resume after this event id (sent by browsers on reconnect).")]
Reader = Annotated[Principal, Depends(Allow(P.JOBS_READ))]
Follower = Annotated[Principal, Depends(AllowStream(P.JOBS_READ))]
SSE_DOC = {200: {"content": {"text/event-stream": {}}, "description": "A stream of Server-Sent Events."}}


@router.get("/jobs", response_model=Page[JobOut])
async def list_jobs(session: SessionDep, who: Reader,
                    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
                    kind: PublicJobKind | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[JobOut]:
    """List your organization's jobs, newest first, filtered by status and kind."""
    rows, next_cursor = await jobs.list_jobs(session, who.org_id, status=status_, kind=kind, limit=limit, cursor=cursor)
    return Page[JobOut](items=[JobOut.from_row(j) for j in rows], next_cursor=next_cursor)


# Benchmarks only: included by create_app when AGENTMEM_BENCH_JOBS is on, and never documented.
bench_router = APIRouter(route_class=CheckedRoute, prefix="/api/v1", include_in_schema=False)


@bench_router.post("/bench/noop-jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
@audited("job", target=lambda result: result.id)
async def submit_noop_job(session: SessionDep, who: Annotated[Principal, Depends(Allow(P.MEMORIES_WRITE))],
                          key: IdempotencyKey = None) -> JobOut:
    """A job that does nothing, through the whole job path (bench/noop_jobs.py)."""
    job, _ = await lifecycle.submit(session, who, kind=JobKind.NOOP, payload={}, total=1, key=key)
    await lifecycle.commit(session)
    return JobOut.from_row(job)


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: uuid.UUID, session: SessionDep, who: Reader) -> JobOut:
    """A job's state, progress, attempts, result or error."""
    return JobOut.from_row(await jobs.get_job(session, who.org_id, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"model": ErrorOut, "description": "The job already finished"}})
@audited()
async def cancel_job(job_id: uuid.UUID, session: SessionDep,
                     who: Annotated[Principal, Depends(Allow(P.JOBS_CANCEL))]) -> JobOut:
    """Cancel a job. A queued job is cancelled at once; a running one stops at its next checkpoint
    (`cancel_requested` is true until then)."""
    return JobOut.from_row(await lifecycle.cancel(session, who.org_id, job_id))


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse, responses=SSE_DOC)
@streams
async def job_events(job_id: uuid.UUID, who: Follower, last_event_id: LastEventId = None,
                     last_event_id_query: Annotated[str | None, Query(alias="last_event_id", max_length=64)] = None):
    """Follow a job live (Server-Sent Events).

    First a `snapshot` event with the job, then `queued`, `started`, `progress`, `retrying`, and one
    terminal event (`succeeded`, `failed` or `cancelled`), after which the stream ends. Each event's
    `id:` is its stream position: reconnect with `Last-Event-ID` (or `?last_event_id=`) to resume
    exactly after it. Comment lines are heartbeats.

    Browsers' `EventSource` can't send headers: pass a stream token as `?token=` instead.
    """
    if not can_follow(who, job_id):
        raise NotFound(f"job {job_id} not found", details={"job_id": str(job_id)})
    resume = progress.check_last_event_id(last_event_id or last_event_id_query)
    return await sse_response(progress.follow_job(who.org_id, job_id, resume))


@router.get("/events", response_class=StreamingResponse, responses=SSE_DOC)
@streams
async def organization_events(who: Follower, last_event_id: LastEventId = None,
                              last_event_id_query: Annotated[str | None, Query(alias="last_event_id",
                                                                               max_length=64)] = None):
    """Every job event of your organization, live (Server-Sent Events), for dashboards. Never ends.

    Accepts a stream token made without a `job_id` as `?token=`. A browser that reconnects with a fresh
    token (a new URL, so EventSource sends no `Last-Event-ID`) resumes with `?last_event_id=`.
    """
    if not can_follow(who, None):
        raise NotFound("a stream token for one job can't follow the organization's events", code="not_found")
    resume = progress.check_last_event_id(last_event_id or last_event_id_query)
    return await sse_response(progress.follow_org(who.org_id, resume))


@router.post("/stream-tokens", response_model=StreamTokenOut, status_code=status.HTTP_201_CREATED)
@audited(lambda body: "job" if body.job_id else "organization",
         target=lambda body, who: body.job_id or who.org_id)
async def create_stream_token(body: StreamTokenIn, session: SessionDep, who: Reader) -> StreamTokenOut:
    """A short-lived token for `?token=` on an event stream or the WebSocket, where browsers can't send headers.

    With `job_id` it follows that job only; without, your organization's stream and any of its jobs.
    It can do nothing else, and it stops working when it expires, when its key is revoked or expires, or when
    its user is deactivated or leaves the organization.
    """
    if body.job_id is not None:
        await jobs.get_job(session, who.org_id, body.job_id)
    token, lifetime = auth.issue_stream_token(who, body.job_id)
    return StreamTokenOut(token=token, expires_in=lifetime)
