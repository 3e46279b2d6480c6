"""Embedding jobs: ingest a batch of memories, and re-embed a memory whose content changed."""

from __future__ import annotations

import asyncio
import time
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
    size = ctx.settings.ingest_chunk_size
    chunks = [pending[i:i + size] for i in range(0, len(pending), size)]
    inserted = 0
    seconds = {"embed_wait": 0.0, "store": 0.0}

    def embed(chunk: list[int]) -> asyncio.Task:
        return asyncio.ensure_future(embedder.embed([items[i]["content"] for i in chunk]))

    # Pipelined: the next chunk is embedded while this one is written (the HNSW index update runs
    # in PostgreSQL, so the two overlap instead of adding up).
    upcoming = embed(chunks[0]) if chunks else None
    try:
        for n, chunk in enumerate(chunks):
            started = time.perf_counter()
            vectors = await upcoming
            seconds["embed_wait"] += time.perf_counter() - started
            upcoming = embed(chunks[n + 1]) if n + 1 < len(chunks) else None
            started = time.perf_counter()
            inserted += await _store_chunk(job, items, chunk, vectors)
            seconds["store"] += time.perf_counter() - started
            done += len(chunk)
            if upcoming is not None:  # a checkpoint; after the last chunk the outcome says it all
                await ctx.progress(done, total, f"embedded {done} of {total}")
    finally:
        if upcoming is not None:
            upcoming.cancel()
    return {"memories": total, "inserted": inserted, "already_stored": len(stored),
            "first_memory_id": str(memory_id(job.id, 0)),
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}


async def _store_chunk(job, items: list[dict[str, Any]], chunk: list[int], vectors) -> int:
    """Insert one chunk's memories; rows an earlier attempt stored are left as they are."""
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
    return result.rowcount


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
