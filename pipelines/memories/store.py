"""Memories: read and list the rows of one organization, and every write to them.

Each write (add, replace content, soft delete) records its version in the memory's history in the
caller's transaction, so no pipeline can store a memory without its history row: ingest,
extraction, summaries and the REST routes all write through the functions below.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.embedder import model_identity
from core.errors import NotFound
from core.logging import request_id_var
from pipelines.memories import history
from pipelines.memories.corpus import MEMORIES
from pipelines.pages import newest_first
from schemas.enums import MemoryEvent
from schemas.memories import MemoryBatchIn, MemoryUpdate
from schemas.tables import Memory, MemoryHistory, MemoryPassage


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
        metadata = {"role": item.role} | item.metadata if item.role else item.metadata
        entry = {"content": item.content, "metadata": metadata,
                 "user_id": item.user_id or batch.user_id, "agent_id": item.agent_id or batch.agent_id,
                 "run_id": item.run_id or batch.run_id}
        if item.expires_at is not None:  # only when given, as `deduplicate` below
            entry["expires_at"] = item.expires_at.isoformat()
        items.append(entry)
    # Only when asked: a replay of a batch sent before the option existed must hash the same.
    return {"items": items, "deduplicate": True} if batch.deduplicate else {"items": items}


def extraction_payload(batch: MemoryBatchIn) -> dict[str, Any]:
    """The job payload for `infer`: the conversation, its one scope, and the metadata the facts will carry."""
    first = batch.items[0]
    metadata: dict[str, Any] = {}
    for item in batch.items:
        metadata.update(item.metadata)
    return {"messages": [{"role": item.role or "user", "content": item.content} for item in batch.items],
            "user_id": first.user_id or batch.user_id, "agent_id": first.agent_id or batch.agent_id,
            "run_id": first.run_id or batch.run_id, "metadata": metadata}


def _api_provenance() -> dict[str, Any]:
    return {"source": "api", "request_id": request_id_var.get()}


async def get_memory(session: AsyncSession, org_id: uuid.UUID, memory_id_: uuid.UUID, *,
                     for_update: bool = False) -> Memory:
    """A live (not deleted, not expired) memory of the organization, or NotFound; `for_update` locks its
    row until the transaction ends."""
    query = select(Memory).where(Memory.id == memory_id_, *MEMORIES.org_clauses(org_id))
    row = (await session.execute(query.with_for_update() if for_update else query)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"memory {memory_id_} not found", details={"memory_id": str(memory_id_)})
    return row


async def list_memories(session: AsyncSession, org_id: uuid.UUID, *, user_id: str | None, agent_id: str | None,
                        run_id: str | None, limit: int, cursor: str | None,
                        source_job_id: uuid.UUID | None = None) -> tuple[list[Memory], str | None]:
    """A page of live memories, newest first, narrowed by scope and by the job that stored them."""
    query = select(Memory).where(*MEMORIES.org_clauses(org_id))
    for column, value in ((Memory.user_id, user_id), (Memory.agent_id, agent_id), (Memory.run_id, run_id),
                          (Memory.source_job_id, source_job_id)):
        if value is not None:
            query = query.where(column == value)
    return await newest_first(session, query, Memory, limit=limit, cursor=cursor)


async def update_memory(session: AsyncSession, org_id: uuid.UUID, memory_id_: uuid.UUID,
                        change: MemoryUpdate, *, actor: str | None = None) -> tuple[Memory, bool]:
    """Apply a change; returns (memory, content_changed). The old embedding stays until the new one lands."""
    # The row lock orders concurrent edits, so each gets its own history version.
    memory = await get_memory(session, org_id, memory_id_, for_update=True)
    if change.content is not None and change.content != memory.content:
        row = await replace_content(session, memory.id, org_id=org_id, old_content=memory.content,
                                    content=change.content, metadata=change.metadata, job_id=None, actor=actor,
                                    meta=_api_provenance())
        if "expires_at" in change.model_fields_set:
            row = (await session.execute(update(Memory).where(Memory.id == memory.id)
                                         .values(expires_at=change.expires_at).returning(Memory))).scalar_one()
        return row, True
    # Metadata alone is not a new version of the memory: no history.
    values: dict[str, Any] = {"updated_at": text("now()")}
    if change.metadata is not None:
        values["meta"] = change.metadata
    if "expires_at" in change.model_fields_set:  # null clears it
        values["expires_at"] = change.expires_at
    row = (await session.execute(update(Memory).where(Memory.id == memory.id).values(**values)
                                 .returning(Memory))).scalar_one()
    return row, False


async def delete_memory(session: AsyncSession, org_id: uuid.UUID, memory_id_: uuid.UUID, *,
                        actor: str | None = None) -> None:
    """Soft-delete: the row stays for audit (and its history stays readable) but never appears in reads or search."""
    memory = await get_memory(session, org_id, memory_id_, for_update=True)
    await soft_delete(session, memory.id, org_id=org_id, old_content=memory.content, job_id=None, actor=actor,
                      meta=_api_provenance())


async def add_many(session: AsyncSession, rows: list[dict[str, Any]], *, job_id: uuid.UUID | None,
                   actor: str | None, meta: dict[str, Any], conflict: str | None = "uq_memories_source",
                   ) -> list[uuid.UUID]:
    """Insert memories with their version 1 (ADD); returns the ids actually inserted.

    A row that conflicts on the `conflict` constraint (None: on any unique constraint) is skipped, and
    gets no history row: a redelivered job that stored it before leaves it, and its version 1, as they are.
    """
    if not rows:
        return []
    model = model_identity()
    rows = [{**r, "embedding_model": model if r.get("embedding") is not None else None} for r in rows]
    # The rows as parameter sets of one cached statement, which SQLAlchemy sends as multi-row VALUES
    # (insertmanyvalues, grouping rows by their keys): compiling a VALUES clause of every row, as
    # `.values(rows)` does, cost more CPU than storing them (bench/store_rows.py).
    inserted = list((await session.execute(
        pg_insert(Memory).on_conflict_do_nothing(constraint=conflict).returning(Memory.id), rows)).scalars())
    new = set(inserted)
    await history.record_added(session, [r for r in rows if r["id"] in new], job_id=job_id, actor=actor, meta=meta)
    return inserted


def _from_json(table: str, columns: list[str]) -> str:
    names = ", ".join(columns)
    return (f"INSERT INTO {table} ({names}) SELECT {names} FROM jsonb_populate_recordset(NULL::{table}, "
            f"CAST(:docs AS jsonb)) ON CONFLICT DO NOTHING")


async def add_imported(session: AsyncSession, docs: list[dict[str, Any]], *, versions_follow: bool,
                       job_id: uuid.UUID | None, actor: str | None) -> int:
    """Insert memories read from an export archive (JSON-ready rows, every column of the table); how many were
    new. Rows already there are skipped. Unless the archive's own versions follow (`versions_follow`), each
    new memory gets its version 1 (ADD) here."""
    if not docs:
        return 0
    sql = _from_json("memories", [c.name for c in Memory.__table__.columns]) + " RETURNING id, org_id, content"
    added = [dict(r._mapping) for r in await session.execute(text(sql), {"docs": json.dumps(docs)})]
    if not versions_follow:
        await history.record_added(session, added, job_id=job_id, actor=actor, meta={"source": "import"})
    return len(added)


async def add_imported_versions(session: AsyncSession, docs: list[dict[str, Any]]) -> int:
    """Insert memory versions read from an export archive (their memories imported before); how many were new."""
    if not docs:
        return 0
    sql = _from_json("memory_history", [c.name for c in MemoryHistory.__table__.columns])
    return (await session.execute(text(sql), {"docs": json.dumps(docs)})).rowcount


async def replace_content(session: AsyncSession, memory_id_: uuid.UUID, *, org_id: uuid.UUID, old_content: str,
                          content: str, embedding: list[float] | None = None,
                          metadata: dict[str, Any] | None = None, job_id: uuid.UUID | None, actor: str | None,
                          meta: dict[str, Any]) -> Memory:
    """New content for a memory whose row lock the caller holds (and read `old_content` under), as a new version.

    With `embedding` (computed from `content`) the memory is searchable by its new content at once;
    without, it keeps its old vector until an `embed_memory` job replaces it. `metadata` replaces the
    memory's metadata in the same statement.
    """
    digest = content_hash(content)
    values: dict[str, Any] = {"content": content, "content_hash": digest, "updated_at": text("now()")}
    if embedding is not None:
        values.update(embedding=embedding, embedded_hash=digest, embedding_model=model_identity())
    if metadata is not None:
        values["meta"] = metadata
    row = (await session.execute(update(Memory).where(Memory.id == memory_id_).values(**values)
                                 .returning(Memory))).scalar_one()
    await history.record_change(session, memory_id=memory_id_, org_id=org_id, event=MemoryEvent.UPDATE,
                                old_content=old_content, new_content=content, job_id=job_id, actor=actor, meta=meta)
    return row


async def soft_delete(session: AsyncSession, memory_id_: uuid.UUID, *, org_id: uuid.UUID, old_content: str,
                      job_id: uuid.UUID | None, actor: str | None, meta: dict[str, Any],
                      at: datetime | None = None) -> None:
    """Mark a memory deleted (`at`, default now), as its last version; the caller holds its row lock (and read
    `old_content` under it)."""
    await session.execute(update(Memory).where(Memory.id == memory_id_)
                          .values(deleted_at=at if at is not None else text("now()"), updated_at=text("now()")))
    await history.record_change(session, memory_id=memory_id_, org_id=org_id, event=MemoryEvent.DELETE,
                                old_content=old_content, new_content=None, job_id=job_id, actor=actor, meta=meta)


_DELETE_JOB_MEMORIES = text("""
WITH gone AS (
    UPDATE memories SET deleted_at = now(), updated_at = now()
    WHERE org_id = :org AND source_job_id = :source_job AND deleted_at IS NULL
    RETURNING id, org_id, content)
INSERT INTO memory_history (id, memory_id, org_id, version, event, old_content, new_content, metadata, job_id, actor)
SELECT gen_random_uuid(), g.id, g.org_id,
       coalesce((SELECT max(h.version) FROM memory_history h WHERE h.memory_id = g.id), 0) + 1,
       'DELETE', g.content, NULL, CAST(:meta AS jsonb), NULL, :actor
FROM gone g""")


async def soft_delete_from_job(session: AsyncSession, org_id: uuid.UUID, source_job_id: uuid.UUID, *,
                               actor: str | None, meta: dict[str, Any]) -> int:
    """Soft-delete every live memory a job stored, each with its DELETE version, in one statement; how many."""
    result = await session.execute(_DELETE_JOB_MEMORIES, {"org": org_id, "source_job": source_job_id,
                                                          "meta": json.dumps(meta), "actor": actor})
    return result.rowcount


_DELETE_SCOPE_BATCH = text("""
WITH picked AS (
    SELECT id FROM memories
    WHERE org_id = :org AND deleted_at IS NULL
      AND (CAST(:user_id AS varchar) IS NULL OR user_id = :user_id)
      AND (CAST(:agent_id AS varchar) IS NULL OR agent_id = :agent_id)
      AND (CAST(:run_id AS varchar) IS NULL OR run_id = :run_id)
    ORDER BY id LIMIT :limit FOR UPDATE),
gone AS (
    UPDATE memories m SET deleted_at = now(), updated_at = now() FROM picked
    WHERE m.id = picked.id
    RETURNING m.id, m.org_id, m.content)
INSERT INTO memory_history (id, memory_id, org_id, version, event, old_content, new_content, metadata, job_id, actor)
SELECT gen_random_uuid(), g.id, g.org_id,
       coalesce((SELECT max(h.version) FROM memory_history h WHERE h.memory_id = g.id), 0) + 1,
       'DELETE', g.content, NULL, CAST(:meta AS jsonb), :job_id, :actor
FROM gone g""")


async def soft_delete_scope_batch(session: AsyncSession, org_id: uuid.UUID, *, user_id: str | None,
                                  agent_id: str | None, run_id: str | None, limit: int, job_id: uuid.UUID | None,
                                  actor: str | None, meta: dict[str, Any]) -> int:
    """Soft-delete up to `limit` live memories of a scope (every given field must match), each with its DELETE
    version, in one statement; how many."""
    result = await session.execute(_DELETE_SCOPE_BATCH, {
        "org": org_id, "user_id": user_id, "agent_id": agent_id, "run_id": run_id, "limit": limit,
        "job_id": job_id, "actor": actor, "meta": json.dumps(meta)})
    return result.rowcount


async def set_embedding(session: AsyncSession, memory_id_: uuid.UUID, *, expected_hash: str,
                        embedding: list[float]) -> bool:
    """Attach a vector computed from the content with this hash; False if the content changed since.

    Not a new version of the memory (its content is the same), so no history row.
    """
    # Compare-and-swap on the content hash: never attach this vector to newer content.
    result = await session.execute(
        update(Memory).where(Memory.id == memory_id_, Memory.content_hash == expected_hash)
        .values(embedding=embedding, embedded_hash=expected_hash, embedding_model=model_identity()))
    return result.rowcount == 1


async def merge_into(session: AsyncSession, survivor: Memory, merged: list[Memory], *, content: str,
                     embedding: list[float] | None, job_id: uuid.UUID | None, actor: str | None,
                     meta: dict[str, Any]) -> None:
    """Fold `merged` into `survivor` (all row-locked by the caller): the survivor's next version holds `content`
    and names the memories merged into it (`merged_from`); each merged memory is deleted, naming the survivor
    (`merged_into`). With the same content the survivor's version records the merge alone."""
    sources = {"merged_from": [str(m.id) for m in merged]}
    if content != survivor.content:
        await replace_content(session, survivor.id, org_id=survivor.org_id, old_content=survivor.content,
                              content=content, embedding=embedding, job_id=job_id, actor=actor, meta=meta | sources)
    else:
        await history.record_change(session, memory_id=survivor.id, org_id=survivor.org_id, event=MemoryEvent.UPDATE,
                                    old_content=content, new_content=content, job_id=job_id, actor=actor,
                                    meta=meta | sources)
    for memory in merged:
        await soft_delete(session, memory.id, org_id=memory.org_id, old_content=memory.content, job_id=job_id,
                          actor=actor, meta=meta | {"merged_into": str(survivor.id)})


async def hard_delete(session: AsyncSession, memory_ids: list[uuid.UUID]) -> int:
    """Remove memories for good, with their passages and history (`purge`); how many rows went."""
    if not memory_ids:
        return 0
    await session.execute(delete(MemoryPassage).where(MemoryPassage.memory_id.in_(memory_ids)))
    await session.execute(delete(MemoryHistory).where(MemoryHistory.memory_id.in_(memory_ids)))
    return (await session.execute(delete(Memory).where(Memory.id.in_(memory_ids)))).rowcount
