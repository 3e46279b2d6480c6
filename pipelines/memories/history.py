"""Memory history: every version of a memory (ADD, UPDATE, DELETE), from what, to what, by which job or request.

Versions are recorded only by the writes of pipelines/memories/store.py, each with its memory change
(a unit test keeps it so); everything else reads them through `list_history`. The writer holds the
memory's row lock (or has just inserted the row) when it records a version, so the next version
number is computed without a race. `(memory_id, version)` is unique: recording a version-1 ADD row
again is a no-op.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import InvalidInput, NotFound
from schemas.enums import MemoryEvent
from schemas.tables import Memory, MemoryHistory


async def record_added(session: AsyncSession, rows: list[dict[str, Any]], *, job_id: uuid.UUID | None,
                       actor: str | None, meta: dict[str, Any]) -> None:
    """Version 1 (ADD) of freshly inserted memories; `rows` carry `id`, `org_id` and `content`."""
    if not rows:
        return
    # RETURNING makes SQLAlchemy send the rows as multi-row VALUES (insertmanyvalues); without it asyncpg
    # runs one INSERT per row, and the statement-level triggers on this table (the webhook outbox: one
    # `memory.created` event per statement) would fire per row.
    await session.execute(pg_insert(MemoryHistory).on_conflict_do_nothing(constraint="uq_memory_history_version")
                          .returning(MemoryHistory.id), [
        {"id": uuid.uuid4(), "memory_id": r["id"], "org_id": r["org_id"], "version": 1,
         "event": MemoryEvent.ADD.value, "old_content": None, "new_content": r["content"], "meta": meta,
         "job_id": job_id, "actor": actor} for r in rows
    ])


async def record_change(session: AsyncSession, *, memory_id: uuid.UUID, org_id: uuid.UUID, event: MemoryEvent,
                        old_content: str | None, new_content: str | None, job_id: uuid.UUID | None,
                        actor: str | None, meta: dict[str, Any]) -> None:
    """The next version of a memory whose row lock the caller holds (UPDATE or DELETE)."""
    next_version = (select(func.coalesce(func.max(MemoryHistory.version), 0) + 1)
                    .where(MemoryHistory.memory_id == memory_id).scalar_subquery())
    await session.execute(pg_insert(MemoryHistory).values(
        id=uuid.uuid4(), memory_id=memory_id, org_id=org_id, version=next_version, event=event.value,
        old_content=old_content, new_content=new_content, meta=meta, job_id=job_id, actor=actor))


async def list_history(session: AsyncSession, org_id: uuid.UUID, memory_id: uuid.UUID, *, limit: int,
                       cursor: str | None) -> tuple[list[MemoryHistory], str | None]:
    """A page of a memory's versions, oldest first; deleted memories keep theirs. NotFound for other orgs."""
    exists = (await session.execute(select(Memory.id).where(
        Memory.id == memory_id, Memory.org_id == org_id))).first()
    if exists is None:
        raise NotFound(f"memory {memory_id} not found", details={"memory_id": str(memory_id)})
    query = select(MemoryHistory).where(MemoryHistory.memory_id == memory_id, MemoryHistory.org_id == org_id)
    if cursor is not None:
        query = query.where(MemoryHistory.version > _decode(cursor))
    rows = list((await session.execute(query.order_by(MemoryHistory.version).limit(limit + 1))).scalars())
    next_cursor = str(rows[limit - 1].version) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _decode(cursor: str) -> int:
    if not cursor.isdigit() or len(cursor) > 9:
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor",
                           details={"cursor": cursor[:100]})
    return int(cursor)
