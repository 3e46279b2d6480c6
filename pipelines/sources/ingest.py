"""The `ingest_source` job: a stored upload's text extracted, chunked, embedded and stored as memories.

Everything that can fail on the document itself (reading, no text, too many chunks) happens before
anything is stored, and the memories are written in one transaction under the source row's lock:
a job fails or is cancelled with nothing half-stored, and a source deleted meanwhile gets no
memories. Memory ids come from the job id and the chunk's index (as batch ingest's do), so a
redelivered job writes the same rows once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from core.db import session_scope
from core.embedder import get_embedder
from core.errors import PermanentJobError
from core.settings import get_settings
from pipelines.accounts import limits
from pipelines.jobs.runner import JobContext
from pipelines.memories import passages, store as memories
from pipelines.memories.ingest import memory_rows
from pipelines.sources import store
from pipelines.sources.chunk import Chunk, chunk_document
from pipelines.sources.extract import Document, extract
from schemas.enums import SourceStatus
from schemas.tables import Source


class SourceTooLong(PermanentJobError):
    code = "source_too_long"


def prepare(data: bytes, source: Source) -> tuple[Document, list[Chunk]]:
    """Extract and chunk a source's bytes (CPU-bound: run it in a thread); the document's own errors raise here."""
    document = extract(data, source.media_type)
    chunks = chunk_document(document, size=source.chunk_size, overlap=source.chunk_overlap)
    most = get_settings().source_max_chunks
    if len(chunks) > most:
        raise SourceTooLong(f"the document makes {len(chunks)} chunks of {source.chunk_size} characters, more than "
                            f"{most} (AGENTMEM_SOURCE_MAX_CHUNKS): split it, or upload it with a larger chunk_size")
    return document, chunks


def chunk_items(source: Source, chunks: list[Chunk]) -> list[dict[str, Any]]:
    """Each chunk as a memory item: its text, the source's scope, and metadata naming where it came from."""
    items = []
    for chunk in chunks:
        place: dict[str, Any] = {"source_id": str(source.id), "filename": source.filename,
                                 "media_type": source.media_type, "chunk": chunk.index, "chunks": len(chunks),
                                 "char_start": chunk.start, "char_end": chunk.end, "headings": list(chunk.headings)}
        if chunk.page is not None:
            place |= {"page": chunk.page, "page_end": chunk.page_end}
        items.append({"content": chunk.content, "metadata": source.meta | place, "user_id": source.user_id,
                      "agent_id": source.agent_id, "run_id": source.run_id})
    return items


async def ingest_source(ctx: JobContext) -> dict[str, Any]:
    """Turn a source into memories: extract, chunk, embed (progress per batch of chunks), store all at once."""
    source_id = uuid.UUID(ctx.job.payload["source_id"])
    async with session_scope() as session:
        found = await store.read_blob(session, source_id)
        if found is not None:
            await store.set_status(session, source_id, SourceStatus.PROCESSING)
            await session.commit()
    if found is None:
        return {"source_id": str(source_id), "chunks": 0, "inserted": 0, "reason": "the source was deleted"}
    source, data = found
    try:
        return await _ingest(ctx, source, data)
    except PermanentJobError as exc:
        async with session_scope() as session:
            await store.set_status(session, source_id, SourceStatus.FAILED, error_code=exc.code,
                                   error_message=exc.message)
            await session.commit()
        raise


async def _ingest(ctx: JobContext, source: Source, data: bytes) -> dict[str, Any]:
    document, chunks = await asyncio.to_thread(prepare, data, source)
    del data
    total = len(chunks)
    pages = f"{document.pages} pages, " if document.pages is not None else ""
    await ctx.progress(0, total, f"extracted {pages}{total} chunks")
    items = chunk_items(source, chunks)
    embedder, size = get_embedder(), get_settings().ingest_chunk_size
    embedded: list[passages.Embedded] = []
    for at in range(0, total, size):
        embedded += await passages.embed_contents(embedder.embed, [i["content"] for i in items[at:at + size]])
        await ctx.progress(len(embedded), total, f"embedded {len(embedded)} of {total} chunks")
    async with session_scope() as session:
        if await store.lock_for_storing(session, source.id) is None:
            return {"source_id": str(source.id), "chunks": total, "inserted": 0, "reason": "the source was deleted"}
        await limits.reserve_memories(session, source.org_id, total)
        rows, passage_rows = memory_rows(ctx.job, items, list(range(total)), embedded)
        new = set(await memories.add_many(session, rows, job_id=ctx.job.id, actor=ctx.job.actor,
                                          meta={"source": "document", "source_id": str(source.id)}))
        await passages.add_passages(session, [p for p in passage_rows if p["memory_id"] in new])
        await store.set_status(session, source.id, SourceStatus.READY, chunks=total, pages=document.pages,
                               error_code=None, error_message=None)
        await session.commit()
    return {"source_id": str(source.id), "chunks": total, "inserted": len(new), "already_stored": total - len(new),
            "pages": document.pages, "media_type": source.media_type}
