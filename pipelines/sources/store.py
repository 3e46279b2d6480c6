"""Source rows: an upload stored with its bytes and its `ingest_source` job, read, listed, deleted.

Identical bytes uploaded again to the same organization and scope return the live source already
there, and its job; a source whose ingest failed or was cancelled is replaced instead, so the same
file can be tried again. Deleting a source soft-deletes its memories (each with its DELETE version)
and drops its bytes under the source row's lock, which the job takes to store its memories: the
job either stored them before (and they are deleted now) or sees the deletion and stores nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound
from core.logging import request_id_var
from pipelines.jobs import lifecycle, rows as jobs
from pipelines.memories import store as memories
from pipelines.pages import newest_first
from pipelines.sources.sniff import sniff
from schemas.enums import JobKind, JobStatus, SourceStatus
from schemas.permissions import Principal
from schemas.tables import Job, Memory, Source, SourceBlob

RETRYABLE = (SourceStatus.FAILED, SourceStatus.CANCELLED)


@dataclass(frozen=True)
class Upload:
    """What a client sent: the bytes, their name, the scope and metadata of the memories, and chunking."""

    data: bytes
    filename: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    metadata: dict[str, Any]
    chunk_size: int
    chunk_overlap: int


@dataclass(frozen=True)
class SourceView:
    """A source with what its job and memories say about it."""

    row: Source
    job: Job | None
    memories: int

    @property
    def status(self) -> SourceStatus:
        """The row's status, unless its job ended without the job saying so (time limit, cancel, crash)."""
        status = SourceStatus(self.row.status)
        if status in (SourceStatus.QUEUED, SourceStatus.PROCESSING) and self.job is not None:
            if self.job.status == JobStatus.FAILED.value:
                return SourceStatus.FAILED
            if self.job.status == JobStatus.CANCELLED.value:
                return SourceStatus.CANCELLED
        return status

    @property
    def error(self) -> tuple[str, str] | None:
        if self.row.error_code:
            return self.row.error_code, self.row.error_message or ""
        if self.status in RETRYABLE and self.job is not None and self.job.error_code:
            return self.job.error_code, self.job.error_message or ""
        return None


def _live(org_id: uuid.UUID):
    return select(Source).where(Source.org_id == org_id, Source.deleted_at.is_(None))


def _same_bytes(org_id: uuid.UUID, digest: str, upload: Upload):
    return _live(org_id).where(Source.sha256 == digest, func.coalesce(Source.user_id, "") == (upload.user_id or ""),
                               func.coalesce(Source.agent_id, "") == (upload.agent_id or ""),
                               func.coalesce(Source.run_id, "") == (upload.run_id or ""))


async def _views(session: AsyncSession, rows: list[Source]) -> list[SourceView]:
    job_ids = [r.job_id for r in rows if r.job_id is not None]
    found = {j.id: j for j in (await session.execute(select(Job).where(Job.id.in_(job_ids)))).scalars()} \
        if job_ids else {}
    counts = dict((await session.execute(
        select(Memory.source_job_id, func.count()).where(Memory.source_job_id.in_(job_ids),
                                                         Memory.deleted_at.is_(None))
        .group_by(Memory.source_job_id))).all()) if job_ids else {}
    return [SourceView(r, found.get(r.job_id), counts.get(r.job_id, 0)) for r in rows]


async def add_source(session: AsyncSession, who: Principal, upload: Upload) -> tuple[SourceView, bool]:
    """Store an upload and queue its `ingest_source` job; (source, created). Identical bytes in the same scope
    give the live source back (created False) unless it failed. UnsupportedMediaType (415) for other files."""
    media_type = sniff(upload.data, upload.filename)
    digest = hashlib.sha256(upload.data).hexdigest()
    existing = (await session.execute(_same_bytes(who.org_id, digest, upload).with_for_update())).scalar_one_or_none()
    if existing is not None:
        [view] = await _views(session, [existing])
        if view.status not in RETRYABLE:
            return view, False
        await _drop(session, existing)
    source = (await session.execute(pg_insert(Source).values(
        id=uuid.uuid4(), org_id=who.org_id, user_id=upload.user_id, agent_id=upload.agent_id, run_id=upload.run_id,
        filename=upload.filename, media_type=media_type, size_bytes=len(upload.data), sha256=digest,
        meta=upload.metadata, chunk_size=upload.chunk_size, chunk_overlap=upload.chunk_overlap,
        status=SourceStatus.QUEUED.value, actor=who.actor,
    ).on_conflict_do_nothing().returning(Source))).scalar_one_or_none()
    if source is None:  # the same bytes uploaded at the same moment: that upload's source is this one's
        [view] = await _views(session, [(await session.execute(_same_bytes(who.org_id, digest, upload)))
                                        .scalar_one()])
        return view, False
    job, _ = await lifecycle.submit(session, who, kind=JobKind.INGEST_SOURCE, payload={"source_id": str(source.id)},
                                    total=1, key=None)
    await session.execute(pg_insert(SourceBlob).values(source_id=source.id, content=upload.data))
    source = (await session.execute(update(Source).where(Source.id == source.id).values(job_id=job.id)
                                    .returning(Source))).scalar_one()
    return SourceView(source, job, 0), True


async def get_source(session: AsyncSession, org_id: uuid.UUID, source_id: uuid.UUID) -> SourceView:
    """A live source of the organization with its job and memory count, or NotFound."""
    row = (await session.execute(_live(org_id).where(Source.id == source_id))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"source {source_id} not found", details={"source_id": str(source_id)})
    [view] = await _views(session, [row])
    return view


async def get_content(session: AsyncSession, org_id: uuid.UUID, source_id: uuid.UUID) -> tuple[Source, bytes]:
    """A live source and its original bytes, or NotFound."""
    found = (await session.execute(
        select(Source, SourceBlob.content).join(SourceBlob, SourceBlob.source_id == Source.id)
        .where(Source.id == source_id, Source.org_id == org_id, Source.deleted_at.is_(None)))).one_or_none()
    if found is None:
        raise NotFound(f"source {source_id} not found", details={"source_id": str(source_id)})
    return found[0], found[1]


async def list_sources(session: AsyncSession, org_id: uuid.UUID, *, user_id: str | None, agent_id: str | None,
                       run_id: str | None, limit: int, cursor: str | None) -> tuple[list[SourceView], str | None]:
    """A page of live sources, newest first, narrowed by scope."""
    query = _live(org_id)
    for column, value in ((Source.user_id, user_id), (Source.agent_id, agent_id), (Source.run_id, run_id)):
        if value is not None:
            query = query.where(column == value)
    rows, next_cursor = await newest_first(session, query, Source, limit=limit, cursor=cursor)
    return await _views(session, rows), next_cursor


async def _drop(session: AsyncSession, source: Source, *, actor: str | None = None) -> int:
    """Mark a locked source deleted, drop its bytes and soft-delete its memories; how many memories."""
    await session.execute(update(Source).where(Source.id == source.id)
                          .values(deleted_at=text("now()"), updated_at=text("now()")))
    await session.execute(delete(SourceBlob).where(SourceBlob.source_id == source.id))
    if source.job_id is None:
        return 0
    return await memories.soft_delete_from_job(
        session, source.org_id, source.job_id, actor=actor,
        meta={"source": "api", "request_id": request_id_var.get(), "source_id": str(source.id)})


async def delete_source(session: AsyncSession, org_id: uuid.UUID, source_id: uuid.UUID, *,
                        actor: str | None) -> tuple[int, Job | None]:
    """Soft-delete a source and its memories, and stop its job if it hasn't finished; (memories deleted,
    the job if it was cancelled before it started). The caller commits (and concludes that job)."""
    row = (await session.execute(_live(org_id).where(Source.id == source_id).with_for_update())).scalar_one_or_none()
    if row is None:
        raise NotFound(f"source {source_id} not found", details={"source_id": str(source_id)})
    deleted = await _drop(session, row, actor=actor)
    cancelled = None
    if row.job_id is not None:
        with contextlib.suppress(Conflict):  # already finished: nothing to stop
            job, now = await jobs.cancel(session, org_id, row.job_id)
            cancelled = job if now else None
    return deleted, cancelled


async def lock_for_storing(session: AsyncSession, source_id: uuid.UUID) -> Source | None:
    """The source row, locked until the transaction ends, if it is still live (the job's storing step)."""
    return (await session.execute(select(Source).where(Source.id == source_id, Source.deleted_at.is_(None))
                                  .with_for_update())).scalar_one_or_none()


async def set_status(session: AsyncSession, source_id: uuid.UUID, status: SourceStatus, **fields: Any) -> None:
    """Record where the source's ingest stands (and its chunk count, pages or error)."""
    await session.execute(update(Source).where(Source.id == source_id)
                          .values(status=status.value, updated_at=text("now()"), **fields))


async def read_blob(session: AsyncSession, source_id: uuid.UUID) -> tuple[Source, bytes] | None:
    """A live source and its bytes, for its job; None once it is deleted."""
    found = (await session.execute(
        select(Source, SourceBlob.content).join(SourceBlob, SourceBlob.source_id == Source.id)
        .where(Source.id == source_id, Source.deleted_at.is_(None)))).one_or_none()
    return None if found is None else (found[0], found[1])
