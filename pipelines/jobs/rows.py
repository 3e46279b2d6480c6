"""Job rows: submit (idempotent), read, list, cancel, and the state transitions workers make.

The row is the truth; events are hints. Every transition is a single UPDATE guarded by the state
it expects (compare-and-swap), so redelivered messages and racing workers can't corrupt a job.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Float,
    Integer,
    String,
    Text,
    Uuid,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound
from pipelines.accounts import audit
from pipelines.pages import newest_first
from schemas.enums import JobKind, JobStatus
from schemas.permissions import ActorType, Principal
from schemas.tables import Job

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def request_hash(kind: JobKind, payload: dict[str, Any]) -> str:
    """Fingerprint of a request body, to tell a replay from a different request under the same key."""
    canonical = json.dumps({"kind": kind.value, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_SUBMIT = text("""
INSERT INTO jobs (id, org_id, kind, status, payload, progress_done, progress_total, attempts, max_attempts,
                  cancel_requested, idempotency_key, request_hash, request_id, parent_id, actor, enqueued_at)
VALUES (:id, :org_id, :kind, 'queued', :payload, 0, :total, 0, :max_attempts, false, :key, :hash, :request_id,
        :parent_id, :actor, now())
ON CONFLICT ON CONSTRAINT uq_jobs_idempotency DO NOTHING
RETURNING *""").bindparams(bindparam("id", type_=Uuid), bindparam("org_id", type_=Uuid),
                           bindparam("kind", type_=String), bindparam("payload", type_=JSONB),
                           bindparam("total", type_=Integer),
                           bindparam("max_attempts", type_=Integer), bindparam("key", type_=String),
                           bindparam("hash", type_=String), bindparam("request_id", type_=String),
                           bindparam("parent_id", type_=Uuid), bindparam("actor", type_=String))


async def submit(session: AsyncSession, *, org_id: uuid.UUID, kind: JobKind, payload: dict[str, Any], total: int,
                 idempotency_key: str | None, request_id: str | None, max_attempts: int,
                 parent_id: uuid.UUID | None = None, actor: str | None = None) -> tuple[Job, bool]:
    """Insert a queued job, or return the existing one for a replayed Idempotency-Key; (job, created).

    Fixed SQL, as a claim's: every request that queues work runs it. Without a key nothing can conflict
    (NULLs are distinct in the unique constraint).
    """
    fingerprint = request_hash(kind, payload)
    job = (await session.execute(select(Job).from_statement(_SUBMIT), {
        "id": uuid.uuid4(), "org_id": org_id, "kind": kind.value, "payload": payload, "total": total,
        "max_attempts": max_attempts, "key": idempotency_key, "hash": fingerprint, "request_id": request_id,
        "parent_id": parent_id, "actor": actor})).scalar_one_or_none()
    if job is not None:
        return job, True
    existing = (await session.execute(
        select(Job).where(Job.org_id == org_id, Job.idempotency_key == idempotency_key))).scalar_one()
    if existing.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request",
                       code="idempotency_key_reused", details={"job_id": str(existing.id)})
    return existing, False


async def discard(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Remove a job inserted on this session and never committed (a quota refused it)."""
    await session.execute(delete(Job).where(Job.id == job_id))


async def key_used(session: AsyncSession, org_id: uuid.UUID, idempotency_key: str | None) -> bool:
    """True if the organization already submitted a job under this Idempotency-Key."""
    if idempotency_key is None:
        return False
    return (await session.execute(select(Job.id).where(
        Job.org_id == org_id, Job.idempotency_key == idempotency_key))).first() is not None


async def get_job(session: AsyncSession, org_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """The organization's job, or NotFound (also for other organizations' jobs)."""
    job = (await session.execute(select(Job).where(Job.id == job_id, Job.org_id == org_id))).scalar_one_or_none()
    if job is None:
        raise NotFound(f"job {job_id} not found", details={"job_id": str(job_id)})
    return job


async def list_jobs(session: AsyncSession, org_id: uuid.UUID, *, status: JobStatus | None, kind: JobKind | None,
                    limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    """A page of the organization's jobs, newest first."""
    query = select(Job).where(Job.org_id == org_id)
    if status is not None:
        query = query.where(Job.status == status.value)
    if kind is not None:
        query = query.where(Job.kind == kind.value)
    return await newest_first(session, query, Job, limit=limit, cursor=cursor)


async def cancel(session: AsyncSession, org_id: uuid.UUID, job_id: uuid.UUID) -> tuple[Job, bool]:
    """Cancel a queued job at once, or ask a running one to stop at its next checkpoint; (job, cancelled_now)."""
    now_cancelled = (await session.execute(
        update(Job).where(Job.id == job_id, Job.org_id == org_id, Job.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.CANCELLED.value, cancel_requested=True, finished_at=text("now()"),
                updated_at=text("now()"), error_code="cancelled", error_message="cancelled before it started")
        .returning(Job))).scalar_one_or_none()
    if now_cancelled is not None:
        return now_cancelled, True
    requested = (await session.execute(
        update(Job).where(Job.id == job_id, Job.org_id == org_id, Job.status == JobStatus.RUNNING.value)
        .values(cancel_requested=True, updated_at=text("now()")).returning(Job))).scalar_one_or_none()
    if requested is not None:
        return requested, False
    job = await get_job(session, org_id, job_id)
    raise Conflict(f"job {job_id} already {job.status}", code="job_already_finished",
                   details={"job_id": str(job_id), "status": job.status})


# --- transitions made by workers -------------------------------------------------------------

# A claim takes a queued job, or a running one whose worker's lease ran out (it died), and is not cancelled.
_CLAIM_SQL = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = now(),
       started_at = coalesce(started_at, now()), lease_expires_at = now() + make_interval(secs => :lease),
       worker = :worker
WHERE {which} AND cancel_requested IS false
  AND (status = 'queued' OR (status = 'running' AND lease_expires_at < now()))
RETURNING *"""
_CLAIM = text(_CLAIM_SQL.format(which="id = :id")).bindparams(
    bindparam("id", type_=Uuid), bindparam("lease", type_=Float), bindparam("worker", type_=String))
_CLAIM_MANY = text(_CLAIM_SQL.format(which="id = ANY(:ids) AND kind = :kind AND progress_total <= :max_items")
                   ).bindparams(bindparam("ids", type_=ARRAY(Uuid)), bindparam("kind", type_=String),
                                bindparam("max_items", type_=Integer), bindparam("lease", type_=Float),
                                bindparam("worker", type_=String))


async def claim(session: AsyncSession, job_id: uuid.UUID, lease_seconds: float, worker: str) -> Job | None:
    """Take a job to run: a queued one, or a running one whose worker's lease ran out (it died).

    Fixed SQL, so a claim builds no statement (an ORM UPDATE built per call took half of a small job's claim).
    """
    return (await session.execute(select(Job).from_statement(_CLAIM),
                                  {"id": job_id, "lease": lease_seconds, "worker": worker})).scalar_one_or_none()


async def claim_many(session: AsyncSession, job_ids: list[uuid.UUID], lease_seconds: float, worker: str, *,
                     kind: JobKind, max_items: int) -> list[Job]:
    """`claim` for several jobs at once: those of `kind` with at most `max_items` items; the others stay as they are."""
    return list((await session.execute(select(Job).from_statement(_CLAIM_MANY), {
        "ids": job_ids, "kind": kind.value, "max_items": max_items, "lease": lease_seconds,
        "worker": worker})).scalars())


_SUCCEED_MANY = text("""
WITH finished AS (
    UPDATE jobs AS j SET status = 'succeeded', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
           result = v.result::jsonb, error_code = NULL, error_message = NULL, progress_done = j.progress_total,
           payload = j.payload - CAST(:drop AS text[])
    FROM unnest(CAST(:ids AS uuid[]), CAST(:results AS text[])) AS v(id, result)
    WHERE j.id = v.id AND j.status = 'running'
    RETURNING j.*
), recorded AS (""" + audit.JOB_OUTCOME_INSERT.format(rows="finished") + """)
SELECT * FROM finished""")


async def succeed_many(session: AsyncSession, results: dict[uuid.UUID, dict[str, Any]], *,
                       drop_payload_keys: tuple[str, ...] = ()) -> list[Job]:
    """`finish` as succeeded for several running jobs in one statement, each with its result and its audit row;
    the jobs moved."""
    if not results:
        return []
    ids = list(results)
    return list((await session.execute(select(Job).from_statement(_SUCCEED_MANY), {
        "ids": ids, "results": [json.dumps(results[i], default=str) for i in ids],
        "drop": list(drop_payload_keys)})).scalars())


async def extend_lease(session: AsyncSession, job_id: uuid.UUID, lease_seconds: float) -> bool:
    """Keep the lease of a running job alive; False once it is no longer running."""
    row = (await session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=func.now() + timedelta(seconds=lease_seconds)).returning(Job.id))).first()
    return row is not None


async def cancel_requested(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """Whether someone asked the job to stop (a light read for checks between a job's own checkpoints)."""
    return bool((await session.execute(select(Job.cancel_requested).where(Job.id == job_id))).scalar_one_or_none())


async def record_progress(session: AsyncSession, job_id: uuid.UUID, *, done: int, total: int, message: str | None,
                          lease_seconds: float) -> bool:
    """Store progress and renew the lease; returns whether cancellation was requested."""
    row = (await session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(progress_done=done, progress_total=total, progress_message=message, updated_at=text("now()"),
                lease_expires_at=func.now() + timedelta(seconds=lease_seconds))
        .returning(Job.cancel_requested))).first()
    return row is None or bool(row[0])


_FINISH_RECORDED = text("""
WITH finished AS (
    UPDATE jobs SET status = :status, finished_at = now(), updated_at = now(), lease_expires_at = NULL,
           result = :result, error_code = :error_code, error_message = :error_message,
           usage = CASE WHEN :set_usage THEN :usage ELSE usage END,
           progress_done = CASE WHEN :status = 'succeeded' THEN progress_total ELSE progress_done END,
           payload = payload - CAST(:drop AS text[])
    WHERE id = :id AND status = 'running'
    RETURNING *
), recorded AS (""" + audit.JOB_OUTCOME_INSERT.format(rows="finished") + """)
SELECT * FROM finished""").bindparams(
    bindparam("id", type_=Uuid), bindparam("status", type_=String), bindparam("result", type_=JSONB),
    bindparam("error_code", type_=String), bindparam("error_message", type_=Text),
    bindparam("set_usage", type_=Boolean), bindparam("usage", type_=JSONB), bindparam("drop", type_=ARRAY(Text)))


async def finish_recorded(session: AsyncSession, job_id: uuid.UUID, status: JobStatus, *,
                          result: dict[str, Any] | None = None, error_code: str | None = None,
                          error_message: str | None = None, drop_payload_keys: tuple[str, ...] = (),
                          usage: dict[str, Any] | None = None) -> Job | None:
    """`finish`, and in the same statement the job's audit row: fixed SQL, one round trip, no statement built."""
    return (await session.execute(select(Job).from_statement(_FINISH_RECORDED), {
        "id": job_id, "status": status.value, "result": result, "error_code": error_code,
        "error_message": error_message, "set_usage": usage is not None, "usage": usage,
        "drop": list(drop_payload_keys)})).scalar_one_or_none()


async def release_for_retry(session: AsyncSession, job_id: uuid.UUID, *, error_code: str, error_message: str,
                            usage: dict[str, Any] | None = None) -> Job | None:
    """Put a running job back to queued with its last error visible, for the broker's retry."""
    values: dict[str, Any] = dict(status=JobStatus.QUEUED.value, error_code=error_code, error_message=error_message,
                                  lease_expires_at=None, updated_at=text("now()"), enqueued_at=text("now()"))
    if usage is not None:
        values["usage"] = usage
    return (await session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value).values(**values)
        .returning(Job))).scalar_one_or_none()


# --- maintenance ---------------------------------------------------------------------------------

async def find_stalled(session: AsyncSession, *, queued_older_than: float, limit: int = 500) -> list[Job]:
    """Queued jobs not picked up for a while, and running jobs whose lease expired (worker died)."""
    return list((await session.execute(
        select(Job).where(or_(
            and_(Job.status == JobStatus.QUEUED.value,
                 Job.enqueued_at < func.now() - timedelta(seconds=queued_older_than)),
            and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < text("now()")),
        )).order_by(Job.enqueued_at).limit(limit))).scalars())


async def mark_resent(session: AsyncSession, job: Job) -> bool:
    """Note that the scheduler is sending a stalled job's message again, if the row is still as it was read.

    A compare-and-swap on status, attempts and enqueued_at: False when the job moved on meanwhile
    (picked up, finished, or already re-sent), and then it must not be sent.
    """
    row = (await session.execute(
        update(Job).where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts,
                          Job.enqueued_at == job.enqueued_at)
        .values(enqueued_at=text("now()")).returning(Job.id))).first()
    return row is not None


async def cancel_abandoned(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """A running job asked to cancel whose worker died: it is cancelled, not restarted."""
    return (await session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.cancel_requested.is_(True),
                          Job.lease_expires_at < text("now()"))
        .values(status=JobStatus.CANCELLED.value, finished_at=text("now()"), updated_at=text("now()"),
                error_code="cancelled", error_message="cancelled while its worker was gone", lease_expires_at=None)
        .returning(Job))).scalar_one_or_none()


async def counts_by_kind_status(session: AsyncSession) -> list[tuple[str, str, int]]:
    """(kind, status, count) over all jobs, for metrics."""
    rows = await session.execute(text("SELECT kind, status, count(*) FROM jobs GROUP BY kind, status"))
    return [(k, s, n) for k, s, n in rows]


def job_principal(job: Any) -> Principal:
    """Whoever submitted the job, as the principal its writes are recorded under."""
    kind, _, ident = (job.actor or "system").partition(":")
    try:
        actor_type, actor_id = ActorType(kind), uuid.UUID(ident) if ident else None
    except ValueError:
        actor_type, actor_id = ActorType.SYSTEM, None
    return Principal(actor_type=actor_type, actor_id=actor_id, name=job.actor or "system", org_id=job.org_id)
