"""Embedding jobs: ingest a batch of memories, and re-embed a memory whose content changed.

An ingest with `deduplicate` skips items that repeat a stored memory of their scope, or an earlier
item of the batch (pipelines/memories/dedup.py); without it nothing is compared (throughput first).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.db import session_scope
from core.embedder import get_embedder
from core.errors import JobCancelled
from core.settings import get_settings
from pipelines.jobs.runner import JobContext
from pipelines.memories import dedup, passages, store
from pipelines.memories.store import content_hash, memory_id
from schemas.tables import Memory

# Duplicates listed one by one in a job's result; beyond, only counted.
MAX_REPORTED_DUPLICATES = 1000


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
    size = get_settings().ingest_chunk_size
    chunks = [pending[i:i + size] for i in range(0, len(pending), size)]
    inserted = 0
    seconds = {"embed_wait": 0.0, "store": 0.0}
    deduplicate = bool(job.payload.get("deduplicate"))
    duplicates: list[dict[str, Any]] = []
    skipped = 0

    def embed(chunk: list[int]) -> asyncio.Task:
        return asyncio.ensure_future(passages.embed_contents(embedder.embed, [items[i]["content"] for i in chunk]))

    # Pipelined: the next chunk is embedded while this one is written (the HNSW index update runs
    # in PostgreSQL, so the two overlap instead of adding up).
    upcoming = embed(chunks[0]) if chunks else None
    try:
        for n, chunk in enumerate(chunks):
            await _checkpoint(ctx, done, total, inserted, len(stored), first=n == 0)
            started = time.perf_counter()
            embedded = await upcoming
            vectors = [e.head for e in embedded]
            seconds["embed_wait"] += time.perf_counter() - started
            upcoming = embed(chunks[n + 1]) if n + 1 < len(chunks) else None
            started = time.perf_counter()
            keep, kept_vectors = chunk, embedded
            if deduplicate:
                found = await _duplicates(job, items, chunk, vectors, get_settings().dedup_similarity)
                skipped += len(found)
                duplicates.extend({"index": i, **found[i].as_dict()} for i in chunk if i in found)
                keep = [i for i in chunk if i not in found]
                kept_vectors = [e for i, e in zip(chunk, embedded, strict=True) if i not in found]
            if keep:
                inserted += await _store_chunk(job, items, keep, kept_vectors)
            seconds["store"] += time.perf_counter() - started
            done += len(chunk)
    finally:
        if upcoming is not None:
            upcoming.cancel()
    result = {"memories": total, "inserted": inserted, "already_stored": len(stored),
              "first_memory_id": str(memory_id(job.id, 0)),
              "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    if deduplicate:
        result |= {"skipped_duplicates": skipped, "duplicates": duplicates[:MAX_REPORTED_DUPLICATES]}
    return result


async def _checkpoint(ctx: JobContext, done: int, total: int, inserted: int, earlier: int, *, first: bool) -> None:
    """Progress before each chunk but the first (a checkpoint; after the last chunk the outcome says it all).
    Cancelled there, the memories already stored stay: the cancelled job's result counts them."""
    if first:
        return
    try:
        await ctx.progress(done, total, f"embedded {done} of {total}")
    except JobCancelled as cancelled:
        kept = inserted + earlier
        cancelled.result = {"memories": total, "kept": kept, "not_stored": total - done,
                            "first_memory_id": str(memory_id(ctx.job.id, 0)) if kept else None,
                            "note": "memories stored before the cancellation are kept and searchable; list them "
                                    f"with GET /api/v1/memories?source_job_id={ctx.job.id}"}
        raise


async def _duplicates(job, items: list[dict[str, Any]], chunk: list[int], vectors,
                      threshold: float) -> dict[int, dedup.Match]:
    """The chunk's items that repeat a stored memory of their scope or an earlier item of the chunk.

    Earlier chunks are stored (and committed) by the time a chunk is checked, so comparing with the
    database covers them.
    """
    contents = [items[i]["content"] for i in chunk]
    scopes = [dedup.Scope.of(items[i]) for i in chunk]
    digests = [content_hash(c) for c in contents]
    found: dict[int, dedup.Match] = {}
    async with session_scope() as session:
        exact = await dedup.exact_matches(session, job.org_id, list(zip(scopes, digests, strict=True)))
        for n, i in enumerate(chunk):
            if (scopes[n], digests[n]) in exact:
                found[i] = dedup.Match(exact[(scopes[n], digests[n])], "exact", 1.0)
                continue
            near = await dedup.stored_duplicate(session, job.org_id, scopes[n], contents[n], vectors[n], threshold)
            if near is not None:
                found[i] = near
    earlier = dedup.earlier_duplicates(contents, vectors, scopes, threshold, skip=[i in found for i in chunk])
    for n, (m, kind, similarity) in earlier.items():
        found[chunk[n]] = dedup.Match(memory_id(job.id, chunk[m]), kind, similarity)
    return found


def memory_rows(job, items: list[dict[str, Any]], chunk: list[int],
                embedded: list[passages.Embedded]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The memory rows and passage rows of some of a job's items."""
    rows, passage_rows = [], []
    for i, vectors in zip(chunk, embedded, strict=True):
        item = items[i]
        digest = content_hash(item["content"])
        rows.append(dict(id=memory_id(job.id, i), org_id=job.org_id, user_id=item.get("user_id"),
                         agent_id=item.get("agent_id"), run_id=item.get("run_id"), content=item["content"],
                         meta=item.get("metadata") or {}, content_hash=digest, embedding=vectors.head,
                         embedded_hash=digest, source_job_id=job.id, source_index=i,
                         expires_at=datetime.fromisoformat(item["expires_at"]) if item.get("expires_at") else None))
        passage_rows += passages.passage_rows(memory_id(job.id, i), job.org_id, digest, vectors)
    return rows, passage_rows


async def _store_rows(session, job, rows: list[dict[str, Any]], passage_rows: list[dict[str, Any]]) -> int:
    new = set(await store.add_many(session, rows, job_id=job.id, actor=job.actor, meta={"source": "ingest"}))
    await passages.add_passages(session, [p for p in passage_rows if p["memory_id"] in new])
    return len(new)


async def _store_chunk(job, items: list[dict[str, Any]], chunk: list[int],
                       embedded: list[passages.Embedded]) -> int:
    """Insert one chunk's memories and their passages; rows an earlier attempt stored are left as they are."""
    async with session_scope() as session:
        inserted = await _store_rows(session, job, *memory_rows(job, items, chunk, embedded))
        await session.commit()
    return inserted


def coalescable(job) -> bool:
    """Whether a small ingest job may run in a batch with others (`deduplicate` compares item by item: alone)."""
    return not job.payload.get("deduplicate")


async def ingest_jobs(jobs: list, session) -> dict[uuid.UUID, dict[str, Any]]:
    """Several small ingest jobs at once: their items embedded in one call, stored in the caller's transaction.

    Rows an earlier attempt stored are left as they are (counted as `already_stored`), as in `ingest_memories`.
    """
    texts = [item["content"] for job in jobs for item in job.payload["items"]]
    started = time.perf_counter()
    embedded = await passages.embed_contents(get_embedder().embed, texts)
    embed_wait = time.perf_counter() - started
    results, at = {}, 0
    for job in jobs:
        items = job.payload["items"]
        started = time.perf_counter()
        mine = list(range(len(items)))
        inserted = await _store_rows(session, job, *memory_rows(job, items, mine, embedded[at:at + len(items)]))
        at += len(items)
        results[job.id] = {"memories": len(items), "inserted": inserted, "already_stored": len(items) - inserted,
                           "first_memory_id": str(memory_id(job.id, 0)),
                           "seconds": {"embed_wait": round(embed_wait, 3),
                                       "store": round(time.perf_counter() - started, 3)}}
    return results


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
    [vectors] = await passages.embed_contents(get_embedder().embed, [memory.content])
    async with session_scope() as session:
        updated = await store.set_embedding(session, memory_id_, expected_hash=expected_hash, embedding=vectors.head)
        if updated:
            await passages.replace_passages(
                session, memory_id_, passages.passage_rows(memory_id_, ctx.job.org_id, expected_hash, vectors))
        await session.commit()
    return {"memory_id": str(memory_id_), "updated": updated}
