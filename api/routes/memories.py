"""Memories: ingest in batches (as jobs), read, change, delete, search by meaning."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api.deps import Allow, IdempotencyKey, SessionDep
from api.context import audit_target, read_only
from api.enqueue import start_job
from pipelines import memories, search
from schemas.common import ErrorOut, Page
from schemas.enums import JobKind
from schemas.permissions import Permission as P
from schemas.permissions import Principal
from schemas.jobs import JobOut
from schemas.memories import (MemoryBatchIn, MemoryOut, MemorySearchIn, MemoryUpdate, MemoryUpdateOut, SearchHit,
                              SearchOut)

router = APIRouter(prefix="/api/v1/memories", tags=["memories"],
                   responses={401: {"model": ErrorOut, "description": "Missing or invalid credentials"},
                              403: {"model": ErrorOut, "description": "Your role lacks the permission"},
                              422: {"model": ErrorOut, "description": "Invalid input"},
                              503: {"model": ErrorOut, "description": "Database or Redis unavailable"}})
ScopeQuery = Annotated[str | None, Query(min_length=1, max_length=255)]
Reader = Annotated[Principal, Depends(Allow(P.MEMORIES_READ))]
Writer = Annotated[Principal, Depends(Allow(P.MEMORIES_WRITE))]
Deleter = Annotated[Principal, Depends(Allow(P.MEMORIES_DELETE))]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached (see `code`)"}})
async def ingest_memories(body: MemoryBatchIn, session: SessionDep, who: Writer, response: Response,
                          key: IdempotencyKey = None) -> JobOut:
    """Queue 1 to 10,000 memories for embedding and storage.

    Answers `202` with the job at once. Follow it at `GET /api/v1/jobs/{id}` or live at
    `GET /api/v1/jobs/{id}/events`. The memories become searchable when the job succeeds.
    """
    job, _ = await start_job(session, who, kind=JobKind.INGEST_MEMORIES, payload=memories.ingest_payload(body),
                             total=len(body.items), key=key)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    audit_target("job", job.id, items=len(body.items))
    return JobOut.from_row(job)


@router.post("/search", response_model=SearchOut)
@read_only
async def search_memories(body: MemorySearchIn, session: SessionDep, who: Reader) -> SearchOut:
    """Find memories by meaning: cosine similarity of embeddings, narrowed by scope and metadata."""
    hits = await search.search_memories(session, who.org_id, body)
    return SearchOut(hits=[SearchHit(memory=MemoryOut.from_row(m), score=score) for m, score in hits])


@router.get("", response_model=Page[MemoryOut])
async def list_memories(session: SessionDep, who: Reader, user_id: ScopeQuery = None,
                        agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[MemoryOut]:
    """List memories newest first, optionally within a user, agent or run scope."""
    rows, next_cursor = await memories.list_memories(session, who.org_id, user_id=user_id, agent_id=agent_id,
                                                     run_id=run_id, limit=limit, cursor=cursor)
    return Page[MemoryOut](items=[MemoryOut.from_row(m) for m in rows], next_cursor=next_cursor)


@router.get("/{memory_id}", response_model=MemoryOut, responses={404: {"model": ErrorOut}})
async def get_memory(memory_id: uuid.UUID, session: SessionDep, who: Reader) -> MemoryOut:
    """Read one memory."""
    return MemoryOut.from_row(await memories.get_memory(session, who.org_id, memory_id))


@router.patch("/{memory_id}", response_model=MemoryUpdateOut, responses={404: {"model": ErrorOut}})
async def update_memory(memory_id: uuid.UUID, body: MemoryUpdate, session: SessionDep,
                        who: Writer) -> MemoryUpdateOut:
    """Change a memory's content or metadata.

    A content change queues an `embed_memory` job (returned as `job`); until it finishes, search
    uses the previous embedding and `embedding_status` is `pending`.
    """
    memory, changed = await memories.update_memory(session, who.org_id, memory_id, body)
    if not changed:
        await session.commit()
        return MemoryUpdateOut(memory=MemoryOut.from_row(memory))
    job, _ = await start_job(session, who, kind=JobKind.EMBED_MEMORY, total=1, key=None,
                             payload={"memory_id": str(memory.id), "content_hash": memory.content_hash})
    return MemoryUpdateOut(memory=MemoryOut.from_row(memory), job=JobOut.from_row(job))


@router.delete("/{memory_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}})
async def delete_memory(memory_id: uuid.UUID, session: SessionDep, who: Deleter) -> Response:
    """Delete a memory (soft): it disappears from reads and search at once."""
    await memories.delete_memory(session, who.org_id, memory_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
