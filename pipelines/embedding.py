"""Embedding jobs: ingest a batch of memories, and re-embed a memory whose content changed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.db import session_scope
from core.embedder import get_embedder
from pipelines.memories import content_hash, memory_id
from pipelines.runner import JobContext
from schemas.tables import Memory


async def ingest_memories(ctx: JobContext) -> dict[str, Any]:
    """Embed the job's items in chunks and insert them; items already stored by an earlier attempt are skipped."""
    job = ctx.job
    items: list[dict[str, Any]] = job.payload["items"]
    total = len(items)
    async with session_scope() as session:
        stored = set((await session.execute(
            select(Memory.source_index).where(Memory.source_job_id == job.id))).scalars())
    pending = [i for i in range(total) if i not in stored]
    done = total - len(pending)
    await ctx.progress(done, total, f"resuming: {done} already stored" if done else "embedding")
    embedder = get_embedder()
    chunk_size = ctx.settings.ingest_chunk_size
    inserted = 0
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start:start + chunk_size]
        vectors = await embedder.embed([items[i]["content"] for i in chunk])
        rows = []
        for i, vector in zip(chunk, vectors, strict=True):
            item = items[i]
            digest = content_hash(item["content"])
            rows.append(dict(id=memory_id(job.id, i), org_id=job.org_id, user_id=item.get("user_id"),
                             agent_id=item.get("agent_id"), run_id=item.get("run_id"), content=item["content"],
                             meta=item.get("metadata") or {}, content_hash=digest, embedding=vector,
                             embedded_hash=digest, source_job_id=job.id, source_index=i))
        async with session_scope() as session:
            result = await session.execute(
                pg_insert(Memory).values(rows).on_conflict_do_nothing(constraint="uq_memories_source"))
            await session.commit()
        inserted += result.rowcount
        done += len(chunk)
        await ctx.progress(done, total, f"embedded {done} of {total}")
    return {"memories": total, "inserted": inserted, "already_stored": len(stored),
            "first_memory_id": str(memory_id(job.id, 0))}


async def embed_memory(ctx: JobContext) -> dict[str, Any]:
    """Re-embed one memory; a newer edit or a deletion meanwhile makes this job a no-op."""
    memory_id_ = uuid.UUID(ctx.job.payload["memory_id"])
    expected_hash = ctx.job.payload["content_hash"]
    await ctx.progress(0, 1, "embedding")
    async with session_scope() as session:
        memory = await session.get(Memory, memory_id_)
    if memory is None or memory.deleted_at is not None or memory.org_id != ctx.job.org_id:
        return {"memory_id": str(memory_id_), "updated": False, "reason": "deleted"}
    if memory.content_hash != expected_hash:
        return {"memory_id": str(memory_id_), "updated": False, "reason": "superseded by a newer edit"}
    [vector] = await get_embedder().embed([memory.content])
    async with session_scope() as session:
        # Compare-and-swap on the content hash: never attach this vector to newer content.
        result = await session.execute(
            update(Memory).where(Memory.id == memory_id_, Memory.content_hash == expected_hash)
            .values(embedding=vector, embedded_hash=expected_hash))
        await session.commit()
    return {"memory_id": str(memory_id_), "updated": result.rowcount == 1}
