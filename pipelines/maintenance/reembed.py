"""`reembed`: give each live memory (and message) of the organization a vector of the current embedding model.

A memory is re-embedded when it has no vector, when its vector was computed from older content (an
edit whose `embed_memory` job failed), or when another model (or model version) made it or one of its
passages: `memories.embedding_model` records which (`core.embedder.model_identity`). Batches of
`batch_size` memories, walked by id, are embedded and then written in one short transaction each, the
write a compare-and-swap on the content hash (a memory edited meanwhile gets its vector from its own
`embed_memory` job); then the conversation messages with text, the same way. The rows still to do
are the checkpoint: a redelivered or repeated run finds only what is left, and a run with nothing left
does nothing.

Search keeps working throughout: it compares a query only with vectors of the model that embedded the
query, and with AGENTMEM_EMBEDDING_PREVIOUS_MODEL set it embeds the query with both models, so each
memory is found through whichever vector it has at the moment (README "Switching embedding models").

A model of another dimension (AGENTMEM_EMBEDDING_DIM no longer the columns') is switched to online: the run
first moves the old vectors aside into `embedding_prev` columns and gives the tables an empty `embedding` of
the new dimension (core/embedding_columns.py `begin`, idempotent), then fills it as above; search meanwhile
compares the old model's query with the old vectors. The run that leaves no live row of any organization
without its new vector drops the old columns (`finish`); until then each run reports what it waits for.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from core import embedding_columns
from core.db import session_scope
from core.embedder import get_embedder, model_identity
from core.errors import PermanentJobError
from core.settings import get_settings
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import MaintenanceTask
from pipelines.memories import passages, store

MAX_REPORTED = 100  # failed memories listed one by one in the result; beyond, only counted

_PENDING = """
FROM memories m
WHERE m.org_id = :org AND m.deleted_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now())
  AND (m.embedding IS NULL OR m.embedded_hash IS DISTINCT FROM m.content_hash
       OR m.embedding_model IS DISTINCT FROM :model
       OR EXISTS (SELECT 1 FROM memory_passages p WHERE p.memory_id = m.id
                  AND p.embedding_model IS DISTINCT FROM :model))"""
_COUNT = text("SELECT count(*) " + _PENDING)
_BATCH = text("SELECT m.id, m.content, m.content_hash " + _PENDING + " AND m.id > :after ORDER BY m.id LIMIT :n")
# Conversation messages with text (those `embed_missing` embeds after a turn) lacking a current vector.
_MESSAGES = """
FROM messages WHERE org_id = :org AND deleted_at IS NULL AND role IN ('user', 'assistant') AND content <> ''
  AND embedding_model IS DISTINCT FROM :model"""
_COUNT_MESSAGES = text("SELECT count(*) " + _MESSAGES)
_MESSAGE_BATCH = text("SELECT id, content " + _MESSAGES + " AND id > :after ORDER BY id LIMIT :n")
_SET_MESSAGE = text("UPDATE messages SET embedding = CAST(:v AS vector), embedding_model = :model "
                    "WHERE id = :id AND content = :content")


class ReembedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(default=None, ge=1, le=1000, description="Memories per batch (default "
                                                                             "AGENTMEM_MAINTENANCE_BATCH_SIZE).")


async def _embed(contents: list[str], *, split: bool = True) -> list[passages.Embedded | None]:
    """Each content's vectors (a memory's passages when `split`, else one vector for the text, as messages
    have); one the endpoint refuses (None) does not stop the others."""
    embed = get_embedder().embed
    try:
        if split:
            return list(await passages.embed_contents(embed, contents))
        return [passages.Embedded(vector, []) for vector in await embed(contents)]
    except PermanentJobError:
        if len(contents) == 1:
            return [None]
    out: list[passages.Embedded | None] = []
    for content in contents:
        out.extend(await _embed([content], split=split))
    return out


async def reembed(ctx: JobContext, params: ReembedParams) -> dict[str, Any]:
    """Re-embed the organization's memories that lack a current vector, a batch per transaction."""
    settings = get_settings()
    org: uuid.UUID = ctx.job.org_id
    model = model_identity()
    before = await embedding_columns.states()
    switching = await embedding_columns.begin(settings.embedding_dim)
    size = params.batch_size or settings.maintenance_batch_size
    async with session_scope() as session:
        total = int((await session.execute(_COUNT, {"org": org, "model": model})).scalar_one())
    await ctx.progress(0, total, f"{total} memories to embed with {model}")
    after, done, moved, changed = uuid.UUID(int=0), 0, 0, 0
    failed: list[str] = []
    while True:
        async with session_scope() as session:
            rows = (await session.execute(_BATCH, {"org": org, "model": model, "after": after, "n": size})).all()
        if not rows:
            break
        after = rows[-1].id
        embedded = await _embed([r.content for r in rows])
        async with session_scope() as session:
            for row, vectors in zip(rows, embedded, strict=True):
                if vectors is None:
                    failed.append(str(row.id))
                    continue
                if await store.set_embedding(session, row.id, expected_hash=row.content_hash, embedding=vectors.head):
                    await passages.replace_passages(session, row.id,
                                                    passages.passage_rows(row.id, org, row.content_hash, vectors))
                    moved += 1
                else:
                    changed += 1
            await session.commit()
        done += len(rows)
        await ctx.progress(done, max(total, done), f"embedded {done} of {max(total, done)}")
    messages = await _reembed_messages(ctx, model, size, failed)
    async with session_scope() as session:
        remaining = int((await session.execute(_COUNT, {"org": org, "model": model})).scalar_one())
    result = {"model": model, "pending": total, "reembedded": moved, "changed_meanwhile": changed,
              "messages_reembedded": messages, "failed": len(failed), "failed_ids": failed[:MAX_REPORTED],
              "remaining": remaining}
    if switching:
        old = next((s.prev_dim for s in before.values() if s.switching), before["memories"].dim)
        result["dimension_switch"] = await _finish_switch(ctx, old, settings.embedding_dim)
    return result


async def _finish_switch(ctx: JobContext, old: int, dim: int) -> dict[str, Any]:
    """The switch of dimension: finished if nothing is left to move in any organization, else what it waits for."""
    if await embedding_columns.finish():
        await ctx.progress(1, 1, f"switched to {dim} dimensions; the old vectors are dropped")
        return {"from_dim": old, "to_dim": dim, "state": "finished", "waiting_for": 0}
    waiting = await embedding_columns.unmoved()
    await ctx.progress(1, 1, f"{waiting} memories and messages (all organizations) still wait for a "
                             f"{dim}-dimension vector")
    return {"from_dim": old, "to_dim": dim, "state": "filling", "waiting_for": waiting}


async def _reembed_messages(ctx: JobContext, model: str, size: int, failed: list[str]) -> int:
    """The same for the organization's conversation messages (their vectors serve conversation search)."""
    org = ctx.job.org_id
    async with session_scope() as session:
        total = int((await session.execute(_COUNT_MESSAGES, {"org": org, "model": model})).scalar_one())
    after, done, moved = uuid.UUID(int=0), 0, 0
    while total:
        async with session_scope() as session:
            rows = (await session.execute(_MESSAGE_BATCH, {"org": org, "model": model, "after": after,
                                                            "n": size})).all()
        if not rows:
            break
        after = rows[-1].id
        embedded = await _embed([r.content for r in rows], split=False)
        async with session_scope() as session:
            for row, vectors in zip(rows, embedded, strict=True):
                if vectors is None:
                    failed.append(str(row.id))
                    continue
                result = await session.execute(_SET_MESSAGE, {"v": str(vectors.head), "model": model, "id": row.id,
                                                              "content": row.content})
                moved += result.rowcount
            await session.commit()
        done += len(rows)
        await ctx.progress(done, max(total, done), f"embedded {done} of {max(total, done)} messages")
    return moved


TASK = MaintenanceTask("reembed", "Embed memories that lack a vector of the current embedding model (missing, "
                                  "stale or another model's), in batches; search keeps working meanwhile.",
                       reembed, ReembedParams)
