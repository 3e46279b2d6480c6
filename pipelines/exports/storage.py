"""Archives in the database: rows in `archives`, bytes in `archive_chunks` (about a mebibyte each).

The database is the one store every API and worker process sees, on one host or several, so an
export written by a worker is downloaded through any API process, and an import uploaded to one is
read by any worker. Expired archives keep their row (a download then answers 410) and lose their
bytes: `purge_expired` does it, lazily at each export and import, and is what a retention task calls.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import session_scope
from core.settings import get_settings
from schemas.tables import Archive, ArchiveChunk

CHUNK_BYTES = 1 << 20


def _expiry():
    return func.now() + timedelta(hours=get_settings().export_retention_hours)


async def create(session: AsyncSession, org_id: uuid.UUID, purpose: str, *, archive_id: uuid.UUID | None = None,
                 job_id: uuid.UUID | None = None) -> Archive:
    """A new, empty, incomplete archive row (an existing row of that id is emptied: a job writing again)."""
    archive_id = archive_id or uuid.uuid4()
    await session.execute(delete(ArchiveChunk).where(ArchiveChunk.archive_id == archive_id))
    return (await session.execute(pg_insert(Archive).values(
        id=archive_id, org_id=org_id, purpose=purpose, job_id=job_id, expires_at=_expiry(), complete=False,
    ).on_conflict_do_update(index_elements=["id"], set_={"size_bytes": 0, "sha256": None, "complete": False,
                                                         "manifest": None, "expires_at": _expiry()})
        .returning(Archive))).scalar_one()


async def append(session: AsyncSession, archive_id: uuid.UUID, seq: int, data: bytes) -> None:
    """Store one chunk of an archive's bytes."""
    await session.execute(pg_insert(ArchiveChunk).values(archive_id=archive_id, seq=seq, data=data))


async def seal(session: AsyncSession, archive_id: uuid.UUID, *, size: int, sha256: str,
               manifest: dict[str, Any] | None = None, job_id: uuid.UUID | None = None) -> None:
    """Mark an archive whole: its size, checksum, manifest; from now on it may be read."""
    values: dict[str, Any] = {"size_bytes": size, "sha256": sha256, "manifest": manifest, "complete": True}
    if job_id is not None:
        values["job_id"] = job_id
    await session.execute(update(Archive).where(Archive.id == archive_id).values(**values))


async def store_file(org_id: uuid.UUID, archive_id: uuid.UUID, path: Path, *, job_id: uuid.UUID,
                     manifest: dict[str, Any]) -> Archive:
    """Copy a local archive file into the database in chunks, in one transaction; the sealed row."""
    digest, size = hashlib.sha256(), 0
    async with session_scope() as session:
        await create(session, org_id, "export", archive_id=archive_id, job_id=job_id)
        with path.open("rb") as handle:
            seq = 0
            while block := handle.read(CHUNK_BYTES):
                digest.update(block)
                size += len(block)
                await append(session, archive_id, seq, block)
                seq += 1
        await seal(session, archive_id, size=size, sha256=digest.hexdigest(), manifest=manifest)
        await session.commit()
        return await session.get(Archive, archive_id)


async def get(session: AsyncSession, org_id: uuid.UUID, archive_id: uuid.UUID) -> Archive | None:
    """The organization's archive of that id, if there is one."""
    return (await session.execute(select(Archive).where(Archive.id == archive_id, Archive.org_id == org_id))
            ).scalar_one_or_none()


async def get_many(session: AsyncSession, org_id: uuid.UUID, archive_ids: list[uuid.UUID]) -> list[Archive]:
    """The organization's archives among these ids."""
    if not archive_ids:
        return []
    return list((await session.execute(select(Archive).where(Archive.id.in_(archive_ids),
                                                             Archive.org_id == org_id))).scalars())


async def expired_ids(session: AsyncSession, archive_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Those of these archives past their retention or purged, by the database's clock."""
    if not archive_ids:
        return set()
    return set((await session.execute(select(Archive.id).where(
        Archive.id.in_(archive_ids), (Archive.expires_at <= func.now()) | Archive.purged_at.is_not(None)))).scalars())


async def is_expired(session: AsyncSession, archive_id: uuid.UUID) -> bool:
    """Whether the archive is past its retention or purged, by the database's clock."""
    return bool((await session.execute(select((Archive.expires_at <= func.now()) | Archive.purged_at.is_not(None))
                                       .where(Archive.id == archive_id))).scalar_one())


async def chunks(archive_id: uuid.UUID) -> AsyncIterator[bytes]:
    """An archive's bytes, chunk by chunk, each read in its own short transaction (a download may be slow)."""
    seq = 0
    while True:
        async with session_scope() as session:
            data = (await session.execute(select(ArchiveChunk.data).where(
                ArchiveChunk.archive_id == archive_id, ArchiveChunk.seq == seq))).scalar_one_or_none()
        if data is None:
            return
        yield data
        seq += 1


async def spool(archive_id: uuid.UUID, path: Path) -> int:
    """Write an archive's bytes to a local file; how many bytes."""
    size = 0
    with path.open("wb") as handle:
        async for data in chunks(archive_id):
            handle.write(data)
            size += len(data)
    return size


async def drop(session: AsyncSession, archive_id: uuid.UUID) -> None:
    """Drop an archive's bytes now (an import that succeeded needs its upload no more); the row stays, purged."""
    await session.execute(delete(ArchiveChunk).where(ArchiveChunk.archive_id == archive_id))
    await session.execute(update(Archive).where(Archive.id == archive_id).values(purged_at=text("now()")))


async def purge_expired(session: AsyncSession, *, limit: int = 100) -> int:
    """Drop the bytes of up to `limit` archives past their retention (rows stay, marked purged); how many."""
    ids = list((await session.execute(
        select(Archive.id).where(Archive.purged_at.is_(None), Archive.expires_at <= func.now())
        .order_by(Archive.expires_at).limit(limit).with_for_update(skip_locked=True))).scalars())
    if ids:
        await session.execute(delete(ArchiveChunk).where(ArchiveChunk.archive_id.in_(ids)))
        await session.execute(update(Archive).where(Archive.id.in_(ids)).values(purged_at=text("now()")))
    return len(ids)
