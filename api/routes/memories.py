"""Memories: ingest in batches (as jobs), read, change, delete, search by meaning."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api.admission import SearchSlot
from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited, not_audited
from api.routing import CheckedRoute
from core.errors import InvalidInput
from pipelines.jobs import lifecycle, rows as jobs
from pipelines.llm.configs import require_provider
from pipelines.memories import history, search, store as memories
from schemas.common import ErrorOut, Page
from schemas.enums import JobKind
from schemas.jobs import JobOut
from schemas.memories import MemoryBatchIn, MemoryHistoryOut, MemoryOut, MemoryUpdate, MemoryUpdateOut
from schemas.permissions import Permission as P, Principal
from schemas.search import HitExplanation, MemorySearchIn, SearchHit, SearchOut

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/memories", tags=["memories"],
                   responses=error_responses(401, 403, 422, 429, 503))
ScopeQuery = Annotated[str | None, Query(min_length=1, max_length=255)]
Reader = Annotated[Principal, Depends(Allow(P.MEMORIES_READ))]
Writer = Annotated[Principal, Depends(Allow(P.MEMORIES_WRITE))]
Deleter = Annotated[Principal, Depends(Allow(P.MEMORIES_DELETE))]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses={409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"},
                        429: {"model": ErrorOut, "description": "Rate limit or a job quota reached (see `code`)"}})
@audited("job", target=lambda result: result.id, details=lambda body: {"items": len(body.items)})
async def ingest_memories(body: MemoryBatchIn, session: SessionDep, who: Writer, response: Response,
                          key: IdempotencyKey = None) -> JobOut:
    """Queue 1 to 10,000 memories for embedding and storage, or a conversation to learn facts from.

    Answers `202` with the job at once. Follow it at `GET /api/v1/jobs/{id}` or live at
    `GET /api/v1/jobs/{id}/events`. The memories become searchable when the job succeeds.

    **Plain ingest** (default): each item is stored as it is (an item's `role`, if given, goes into
    its metadata). With `deduplicate: true`, items whose exact or near duplicate is already stored in
    the same scope, or comes earlier in the batch, are skipped; the job result counts them
    (`skipped_duplicates`) and names the memory each repeats (`duplicates`). It is off by default
    because every item then costs a similarity query.

    **`infer: true`** (as mem0's `add(messages, infer=True)`): the items are a conversation, sent as
    `items` or `messages`, each `{"role": "user" | "assistant" | "system", "content": ...}` (role
    defaults to `user`), all in one scope. An `extract_facts` job asks the organization's LLM for the
    facts in it, then merges each into the scope's memories: ADD a new memory, UPDATE the memory it
    corrects (a contradiction replaces the old text), DELETE one it invalidates, or NOOP when it is
    already known (exact or near duplicates are NOOP without asking the LLM). The facts carry the
    messages' metadata. Every change is in `GET /api/v1/memories/{id}/history`. Needs an LLM provider
    (`POST /api/v1/llm/configs`), else `422 llm_not_configured` and nothing is queued.
    """
    if body.infer and not await jobs.key_used(session, who.org_id, key):  # a replay gets its job back regardless
        await require_provider(session, who.org_id)
    kind, payload = ((JobKind.EXTRACT_FACTS, memories.extraction_payload(body)) if body.infer
                     else (JobKind.INGEST_MEMORIES, memories.ingest_payload(body)))
    job, _ = await lifecycle.submit(session, who, kind=kind, payload=payload, total=len(body.items), key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)


@router.post("/search", response_model=SearchOut)
@not_audited
async def search_memories(slot: SearchSlot, body: MemorySearchIn, session: SessionDep, who: Reader) -> SearchOut:
    """Find memories by meaning and by words.

    `mode`: `hybrid` (default) fuses `vector` (embedding cosine similarity) and `text` (full-text,
    BM25): by default a weighted mix of their standardized scores (`fusion: convex`), or weighted
    reciprocal ranks (`fusion: rrf`); `weights` overrides the tuned defaults. Narrow by
    scope, `metadata` (exact match), `created_after`/`created_before` and `filters` (AND/OR of
    conditions on scope fields, `created_at` and `metadata.<key>`: eq, ne, in, nin, gt, gte, lt,
    lte, contains). Each hit explains itself: both scores, both ranks, the fused score. Pass
    `next_cursor` back as `cursor` for more hits.

    Under a burst, a few searches run at once and a few more wait briefly; the rest are refused at
    once with `503 overloaded` and `Retry-After` (see `AGENTMEM_SEARCH_CONCURRENCY`).
    """
    hits, next_cursor, refined = await search.search_memories(session, who.org_id, body)
    return SearchOut(mode=body.mode, refined=refined, next_cursor=next_cursor, hits=[SearchHit(
        memory=MemoryOut.from_row(h.row), score=h.score(body.mode),
        explanation=HitExplanation(vector_score=h.vector_score, vector_rank=h.vector_rank, similarity=h.similarity,
                                   text_score=h.text_score, text_rank=h.text_rank, fused_score=h.fused_score))
        for h in hits])


@router.get("", response_model=Page[MemoryOut])
async def list_memories(session: SessionDep, who: Reader, user_id: ScopeQuery = None,
                        agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
                        source_job_id: Annotated[uuid.UUID | None, Query(
                            description="Only the memories this ingest job stored (a cancelled ingest's result "
                                        "says how many it kept).")] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[MemoryOut]:
    """List memories newest first, optionally within a user, agent or run scope, or stored by one job."""
    rows, next_cursor = await memories.list_memories(session, who.org_id, user_id=user_id, agent_id=agent_id,
                                                     run_id=run_id, limit=limit, cursor=cursor,
                                                     source_job_id=source_job_id)
    return Page[MemoryOut](items=[MemoryOut.from_row(m) for m in rows], next_cursor=next_cursor)


@router.delete("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, responses={
    409: {"model": ErrorOut, "description": "Idempotency-Key reused with another scope"},
    422: {"model": ErrorOut, "description": "`scope_required`: no `user_id`, `agent_id` or `run_id` was given"}})
@audited("job", target=lambda result: result.id,
         details=lambda user_id, agent_id, run_id: {"user_id": user_id, "agent_id": agent_id, "run_id": run_id})
async def delete_memories(session: SessionDep, who: Deleter, response: Response, user_id: ScopeQuery = None,
                          agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
                          key: IdempotencyKey = None) -> JobOut:
    """Delete every memory of a scope: all live memories whose `user_id`, `agent_id` and `run_id` match
    those given (at least one; there is no "delete everything").

    Answers `202` with a `delete_memories` job that soft-deletes them in batches, each with its DELETE
    version in the memory's history as a single delete records; follow its progress at
    `GET /api/v1/jobs/{id}/events`. When it has succeeded, nothing of the scope is listed or found by
    search, including memories stored into the scope while it ran. Running it again deletes nothing more.
    """
    scope = {k: v for k, v in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)) if v is not None}
    if not scope:
        raise InvalidInput("name the scope to delete: user_id, agent_id and/or run_id", code="scope_required")
    job, _ = await lifecycle.submit(session, who, kind=JobKind.DELETE_MEMORIES, payload=scope, total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)


@router.get("/{memory_id}", response_model=MemoryOut, responses={404: {"model": ErrorOut}})
async def get_memory(memory_id: uuid.UUID, session: SessionDep, who: Reader) -> MemoryOut:
    """Read one memory."""
    return MemoryOut.from_row(await memories.get_memory(session, who.org_id, memory_id))


@router.patch("/{memory_id}", response_model=MemoryUpdateOut, responses={404: {"model": ErrorOut}})
@audited()
async def update_memory(memory_id: uuid.UUID, body: MemoryUpdate, session: SessionDep,
                        who: Writer) -> MemoryUpdateOut:
    """Change a memory's content or metadata.

    A content change queues an `embed_memory` job (returned as `job`); until it finishes, search
    uses the previous embedding and `embedding_status` is `pending`.
    """
    memory, changed = await memories.update_memory(session, who.org_id, memory_id, body, actor=who.actor)
    if not changed:
        await session.commit()
        return MemoryUpdateOut(memory=MemoryOut.from_row(memory))
    job, _ = await lifecycle.submit(session, who, kind=JobKind.EMBED_MEMORY, total=1, key=None,
                                    payload={"memory_id": str(memory.id), "content_hash": memory.content_hash})
    await lifecycle.commit(session)
    return MemoryUpdateOut(memory=MemoryOut.from_row(memory), job=JobOut.from_row(job))


@router.delete("/{memory_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}})
@audited()
async def delete_memory(memory_id: uuid.UUID, session: SessionDep, who: Deleter) -> Response:
    """Delete a memory (soft): it disappears from reads and search at once; its history stays readable."""
    await memories.delete_memory(session, who.org_id, memory_id, actor=who.actor)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{memory_id}/history", response_model=Page[MemoryHistoryOut], responses={404: {"model": ErrorOut}})
async def memory_history(memory_id: uuid.UUID, session: SessionDep, who: Reader,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100,
                         cursor: Annotated[str | None, Query(max_length=20)] = None) -> Page[MemoryHistoryOut]:
    """A memory's versions, oldest first: ADD, then each UPDATE and DELETE, with the text before and after,
    the job that made the change (ingest, `extract_facts`) and who asked. Deleted memories keep their history."""
    rows, next_cursor = await history.list_history(session, who.org_id, memory_id, limit=limit, cursor=cursor)
    return Page[MemoryHistoryOut](items=[MemoryHistoryOut.from_row(h) for h in rows], next_cursor=next_cursor)
