"""`consolidate`: merge near-duplicate memories of one scope into the oldest, keeping history and provenance.

Memories are walked oldest first (batches by `created_at`, id). Each one's neighbours are the newer
live memories of its exact scope (organization, user_id, agent_id, run_id) whose vectors come at least
`similarity` close (default AGENTMEM_DEDUP_SIMILARITY, the ingest's `deduplicate` threshold):
- offline (no LLM for the organization), the test of `pipelines/memories/dedup.py` decides: the text
  kept is the longest of the group, and only memories saying nothing it doesn't are merged, so no fact
  is lost ("I am allergic to peanuts" never absorbs "I am not allergic to peanuts");
- with an LLM (the organization's default, else the service's), it is given the group and writes the
  one text that says all of it, or answers null to keep them apart.
The oldest memory keeps its id and gets a new version naming the memories merged into it
(`merged_from`); each of those is deleted, its last version naming the survivor (`merged_into`). A
group is merged in one transaction holding its rows' locks, and skipped if any of them changed since
it was read. Merged memories are gone, so a repeated or redelivered run finds nothing more to merge.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import defer

from core.db import session_scope
from core.embedder import get_embedder
from core.llm import LLMClient
from core.settings import get_settings
from pipelines.jobs.runner import JobContext
from pipelines.llm.configs import provider_for
from pipelines.maintenance.base import MaintenanceTask
from pipelines.memories import dedup, passages, store
from pipelines.memories.corpus import MEMORIES
from schemas.maintenance import MergedMemory
from schemas.memories import MAX_CONTENT_CHARS
from schemas.tables import Memory

NEIGHBOURS = 10  # nearest memories looked at per memory
MAX_REPORTED = 100  # merges listed one by one in the result; beyond, only counted
MERGE_PROMPT = (
    "You merge duplicate memories of an AI assistant about one user. Given stored memories that are near "
    "duplicates, write ONE memory that states everything they state, as briefly as the most complete one. "
    "If they contradict each other or state different facts, answer with text null: they stay apart. "
    "Answer a JSON object {\"text\": string or null}.")


class ConsolidateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    similarity: float | None = Field(default=None, ge=0.5, le=1.0, description="Cosine similarity at or above "
                                     "which memories are compared for merging (default AGENTMEM_DEDUP_SIMILARITY).")


def offline_merge(survivor: Memory, candidates: list[Memory]) -> tuple[str, list[Memory]] | None:
    """The text to keep and the candidates it covers: the longest text that says all the survivor says, and
    the candidates that say nothing beyond it (None: nothing to merge)."""
    for keep in sorted([survivor, *candidates], key=lambda m: -len(m.content)):
        if not dedup.says_nothing_new(survivor.content, keep.content):
            continue
        covered = [c for c in candidates if c is keep or dedup.says_nothing_new(c.content, keep.content)]
        if covered:
            return keep.content, covered
    return None


async def llm_merge(client: LLMClient, survivor: Memory, candidates: list[Memory]) -> str | None:
    """The LLM's one text for the group, or None when it keeps them apart."""
    texts = [m.content for m in (survivor, *candidates)]
    answer = await client.chat_json([{"role": "system", "content": MERGE_PROMPT},
                                     {"role": "user", "content": json.dumps({"memories": texts}, ensure_ascii=False)}],
                                    MergedMemory)
    text = (answer.text or "").strip()
    return text[:MAX_CONTENT_CHARS] or None


async def _candidates(org: uuid.UUID, memory: Memory, threshold: float) -> list[Memory]:
    """The newer memories of its scope whose vectors are at least `threshold` similar."""
    async with session_scope() as session:
        near = await dedup.nearest(session, org, dedup.Scope.of(memory), list(map(float, memory.embedding)),
                                   NEIGHBOURS)
    if not any(m.id == memory.id for m, _ in near):
        return []  # merged into an older one earlier in this run (or changed meanwhile)
    return [m for m, similarity in near if similarity >= threshold and m.id != memory.id
            and (m.created_at, m.id) > (memory.created_at, memory.id)]


async def _merge(ctx: JobContext, survivor: Memory, merged: list[Memory], content: str, mode: str) -> bool:
    """Apply one merge in a transaction holding the group's locks; False if a memory changed since it was read."""
    vectors = None
    if content != survivor.content:
        [vectors] = await passages.embed_contents(get_embedder().embed, [content])
    seen = {m.id: m.content_hash for m in (survivor, *merged)}
    async with session_scope() as session:
        rows = {m.id: m for m in (await session.execute(
            select(Memory).options(defer(Memory.embedding))
            .where(Memory.id.in_(list(seen)), *MEMORIES.org_clauses(ctx.job.org_id))
            .order_by(Memory.id).with_for_update())).scalars()}
        if {i: m.content_hash for i, m in rows.items()} != seen:
            return False
        await store.merge_into(session, rows[survivor.id], [rows[m.id] for m in merged], content=content,
                               embedding=vectors.head if vectors else None, job_id=ctx.job.id, actor=ctx.job.actor,
                               meta={"source": "consolidate", "mode": mode})
        if vectors is not None:
            await passages.replace_passages(session, survivor.id, passages.passage_rows(
                survivor.id, ctx.job.org_id, store.content_hash(content), vectors))
        await session.commit()
    return True


async def consolidate(ctx: JobContext, params: ConsolidateParams) -> dict[str, Any]:
    """Walk the organization's memories oldest first, merging each one's near duplicates into it."""
    settings = get_settings()
    org: uuid.UUID = ctx.job.org_id
    threshold = params.similarity or settings.dedup_similarity
    async with session_scope() as session:
        provider = await provider_for(session, org)
    client = LLMClient(provider, on_usage=ctx.record_usage) if provider is not None else None
    mode = "llm" if client is not None else "offline"
    comparable = [*MEMORIES.org_clauses(org), *MEMORIES.vector_clauses(), Memory.embedded_hash == Memory.content_hash]
    async with session_scope() as session:
        total = int((await session.execute(select(func.count()).select_from(Memory).where(*comparable))).scalar_one())
    await ctx.progress(0, total, f"{total} memories to compare ({mode})")
    after: tuple[datetime, uuid.UUID] = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
    done, merged_count, changed = 0, 0, 0
    merges: list[dict[str, Any]] = []
    while True:
        async with session_scope() as session:
            batch = list((await session.execute(
                select(Memory).where(*comparable, tuple_(Memory.created_at, Memory.id) > after)
                .order_by(Memory.created_at, Memory.id).limit(settings.maintenance_batch_size))).scalars())
        if not batch:
            break
        after = (batch[-1].created_at, batch[-1].id)
        for memory in batch:
            candidates = await _candidates(org, memory, threshold)
            if not candidates:
                continue
            if client is not None:
                text = await llm_merge(client, memory, candidates)
                plan = (text, candidates) if text else None
            else:
                plan = offline_merge(memory, candidates)
            if plan is None:
                continue
            if await _merge(ctx, memory, plan[1], plan[0], mode):
                merged_count += len(plan[1])
                merges.append({"into": str(memory.id), "merged_from": [str(m.id) for m in plan[1]]})
            else:
                changed += 1
        done += len(batch)
        await ctx.progress(done, max(total, done), f"compared {done}, merged {merged_count}")
    return {"mode": mode, "similarity": threshold, "compared": done, "merged": merged_count,
            "groups": len(merges), "changed_meanwhile": changed, "merges": merges[:MAX_REPORTED]}


TASK = MaintenanceTask("consolidate", "Merge near-duplicate memories of each scope into the oldest (offline by the "
                                      "dedup similarity, or through the organization's LLM), keeping history.",
                       consolidate, ConsolidateParams)
