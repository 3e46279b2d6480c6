"""Memories: read, list, change and soft-delete rows of one organization."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound
from pipelines.pages import newest_first
from schemas.memories import MemoryBatchIn, MemoryUpdate
from schemas.tables import Memory


def content_hash(content: str) -> str:
    """sha256 of the content: identifies what an embedding was computed from."""
    return hashlib.sha256(content.encode()).hexdigest()


def memory_id(job_id: uuid.UUID, index: int) -> uuid.UUID:
    """Deterministic id of item `index` of an ingest job: a redelivered job writes the same rows."""
    return uuid.uuid5(job_id, str(index))


def ingest_payload(batch: MemoryBatchIn) -> dict[str, Any]:
    """The job payload for a batch: items with batch-level scope applied."""
    items = []
    for item in batch.items:
        items.append({"content": item.content, "metadata": item.metadata,
                      "user_id": item.user_id or batch.user_id, "agent_id": item.agent_id or batch.agent_id,
                      "run_id": item.run_id or batch.run_id})
    return {"items": items}


async def get_memory(session: AsyncSession, org_id: uuid.UUID, memory_id_: uuid.UUID) -> Memory:
    """A live memory of the organization, or NotFound."""
    row = (await session.execute(select(Memory).where(
        Memory.id == memory_id_, Memory.org_id == org_id, Memory.deleted_at.is_(None)))).scalar_one_or_none()
    if row is None:
        raise NotFound(f"memory {memory_id_} not found", details={"memory_id": str(memory_id_)})
    return row


async def list_memories(session: AsyncSession, org_id: uuid.UUID, *, user_id: str | None, agent_id: str | None,
                        run_id: str | None, limit: int, cursor: str | None) -> tuple[list[Memory], str | None]:
    """A page of live memories, newest first, narrowed by scope."""
    query = select(Memory).where(Memory.org_id == org_id, Memory.deleted_at.is_(None))
    for column, value in ((Memory.user_id, user_id), (Memory.agent_id, agent_id), (Memory.run_id, run_id)):
        if value is not None:
            query = query.where(column == value)
    return await newest_first(session, query, Memory, limit=limit, cursor=cursor)


async def update_memory(session: AsyncSession, org_id: uuid.UUID, memory_id_: uuid.UUID,
                        change: MemoryUpdate) -> tuple[Memory, bool]:
    """Apply a change; returns (memory, content_changed). The old embedding stays until the new one lands."""
    memory = await get_memory(session, org_id, memory_id_)
    values: dict[str, Any] = {"updated_at": text("now()")}
    changed = change.content is not None and change.content != memory.content
    if changed:
        values.update(content=change.content, content_hash=content_hash(change.content))
    if change.metadata is not None:
        values["meta"] = change.metadata
    row = (await session.execute(update(Memory).where(Memory.id == memory.id).values(**values)
                                 .returning(Memory))).scalar_one()
    return row, changed


async def delete_memory(session: AsyncSession, org_id: uuid.UUID, memory_id_: uuid.UUID) -> None:
    """Soft-delete: the row stays for audit but never appears in reads or search."""
    memory = await get_memory(session, org_id, memory_id_)
    await session.execute(update(Memory).where(Memory.id == memory.id)
                          .values(deleted_at=text("now()"), updated_at=text("now()")))
