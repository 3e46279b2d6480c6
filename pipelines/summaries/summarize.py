"""Summaries: a conversation (a run's memories, or chosen memories) condensed into one new memory.

The request is checked when it is made (`check_request`: the sources exist, an abstractive summary
has a provider). The job (`summarize`) loads the sources in conversation order, writes the summary
abstractively with the organization's LLM (`pipelines.summaries.abstractive`) or extractively with the local
embedder (`pipelines.summaries.extractive`), both map-reduce with a checkpoint per chunk, and stores it as a
memory in the sources' scope. The memory's id derives from the job id, so a redelivered message
finds it and stores nothing twice.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import session_scope
from core.embedder import get_embedder
from core.errors import InvalidInput, LLMNotConfigured, LLMOutputInvalid, NotFound, PermanentJobError
from core.llm import LLMClient, ProviderSettings
from core.settings import get_settings
from pipelines.accounts import limits
from pipelines.jobs import rows as jobs
from pipelines.jobs.runner import JobContext
from pipelines.llm.configs import provider_for, require_provider
from pipelines.memories import store
from pipelines.memories.store import content_hash, memory_id
from pipelines.splitting import split_long, split_sentences
from pipelines.summaries import abstractive, extractive
from schemas.summaries import SummaryCreate, SummaryMode
from schemas.tables import Memory

# Up to this many sources are listed by id in the summary's metadata; beyond, a count (and the run).
SOURCE_IDS_IN_METADATA = 100
SCOPES = ("user_id", "agent_id", "run_id")
# A turn that opens with its speaker ("User: …", "Assistant: …").
SPEAKER = re.compile(r"[A-Z][\w .'-]{0,30}: ")


def summary_payload(body: SummaryCreate) -> dict[str, Any]:
    """The job payload of a summary request (defaults resolved by the job, so a replay hashes the same)."""
    return {"run_id": body.run_id, "user_id": body.user_id, "agent_id": body.agent_id,
            "memory_ids": [str(i) for i in body.memory_ids] if body.memory_ids is not None else None,
            "mode": body.mode.value, "max_sentences": body.max_sentences, "target_chars": body.target_chars}


async def check_request(session: AsyncSession, org_id: uuid.UUID, body: SummaryCreate, *, key: str | None) -> None:
    """Refuse a request with nothing to summarize (404 for unknown memories, 422) or no provider to ask."""
    if await jobs.key_used(session, org_id, key):
        return  # a replay gets its job back, whatever changed since
    if body.memory_ids is not None:
        found = set((await session.execute(select(Memory.id).where(
            Memory.org_id == org_id, Memory.deleted_at.is_(None), Memory.id.in_(body.memory_ids)))).scalars())
        missing = [str(i) for i in body.memory_ids if i not in found]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise NotFound(f"{len(missing)} of the memories to summarize were not found: {shown}",
                           details={"missing_ids": missing})
    else:
        count = (await session.execute(select(func.count()).select_from(Memory).where(
            *_run_filter(org_id, body.run_id, body.user_id, body.agent_id)))).scalar_one()
        if count == 0:
            raise InvalidInput(f"run {body.run_id!r} has no memories to summarize", code="nothing_to_summarize",
                               details={"run_id": body.run_id, "user_id": body.user_id, "agent_id": body.agent_id})
    if body.mode is SummaryMode.ABSTRACTIVE:
        await require_provider(session, org_id)


def _run_filter(org_id: uuid.UUID, run_id: str | None, user_id: str | None, agent_id: str | None) -> list:
    conditions = [Memory.org_id == org_id, Memory.deleted_at.is_(None), Memory.run_id == run_id,
                  # Earlier summaries of the run are not part of the conversation.
                  Memory.meta["kind"].astext.is_distinct_from("summary")]
    if user_id is not None:
        conditions.append(Memory.user_id == user_id)
    if agent_id is not None:
        conditions.append(Memory.agent_id == agent_id)
    return conditions


async def load_sources(session: AsyncSession, job: Any) -> list[Memory]:
    """The job's live source memories in conversation order (a run: as of the request)."""
    payload = job.payload
    if payload.get("memory_ids") is not None:
        conditions = [Memory.org_id == job.org_id, Memory.deleted_at.is_(None),
                      Memory.id.in_([uuid.UUID(i) for i in payload["memory_ids"]])]
    else:
        conditions = [*_run_filter(job.org_id, payload["run_id"], payload.get("user_id"), payload.get("agent_id")),
                      Memory.created_at <= job.created_at]
    return list((await session.execute(select(Memory).where(*conditions).order_by(
        Memory.created_at, Memory.source_index.nulls_last(), Memory.id))).scalars())


async def summarize(ctx: JobContext) -> dict[str, Any]:
    """Summarize the job's conversation into a new memory; a redelivered job returns the stored one."""
    job, settings = ctx.job, get_settings()
    payload = job.payload
    summary_id = memory_id(job.id, 0)
    async with session_scope() as session:
        sources = await load_sources(session, job)
        stored = await session.get(Memory, summary_id)
        mode = SummaryMode(payload["mode"])
        provider = None if mode is SummaryMode.EXTRACTIVE or stored else await provider_for(session, job.org_id)
    chars_in = sum(len(m.content) for m in sources)
    if stored is not None:
        return _result(stored, chars_in, chunks=stored.meta.get("chunks"), stored_before=True)
    if not sources:
        raise PermanentJobError("every memory to summarize was deleted before the job ran",
                                code="nothing_to_summarize")
    if mode is SummaryMode.ABSTRACTIVE and provider is None:
        raise LLMNotConfigured("the organization's LLM provider was removed after the summary was requested")
    target_chars = payload.get("target_chars") or settings.summary_target_chars
    chunk_chars = settings.summary_chunk_chars
    if provider is not None:
        summary = await abstractive.summarize(
            [m.content for m in sources], llm_completer(ctx, provider), chunk_chars=chunk_chars,
            target_chars=target_chars, concurrency=provider.max_concurrency, progress=ctx.progress)
        method, details = "abstractive", {"llm_calls": summary.calls, "model": provider.model}
    else:
        sentences = sentences_of(sources, chunk_chars)
        summary = await extractive.summarize(
            sentences, get_embedder().embed, chunk_chars=chunk_chars, target_chars=target_chars,
            max_sentences=payload.get("max_sentences") or settings.summary_max_sentences, progress=ctx.progress)
        method, details = "extractive", {"sentences_in": len(sentences), "sentences_out": len(summary.sentences)}
    row = await store_summary(job, sources, summary.text, method=method, chunks=summary.chunks)
    return _result(row, chars_in, chunks=summary.chunks, reduce_rounds=summary.reduce_rounds, **details)


def sentences_of(sources: list[Memory], chunk_chars: int) -> list[extractive.Sentence]:
    """Every sentence of the sources in order, tagged with its memory and speaker; none longer than a chunk."""
    sentences = []
    for n, memory in enumerate(sources):
        pieces = [piece for sentence in split_sentences(memory.content) for piece in split_long(sentence, chunk_chars)]
        speaker = SPEAKER.match(pieces[0]) if pieces else None
        label = speaker.group(0) if speaker else ""
        sentences.extend(extractive.Sentence(piece, n, "" if k == 0 else label) for k, piece in enumerate(pieces))
    return sentences


def llm_completer(ctx: JobContext, provider: ProviderSettings) -> abstractive.Complete:
    client = LLMClient(provider, on_usage=ctx.record_usage)

    async def complete(messages: abstractive.Messages, max_tokens: int) -> str:
        result = await client.chat(messages, temperature=0.0, max_tokens=max_tokens)
        text = (result.content or "").strip()
        if not text:
            raise LLMOutputInvalid(f"the model {provider.model!r} returned an empty summary",
                                   details={"finish_reason": result.finish_reason})
        return text

    return complete


async def store_summary(job: Any, sources: list[Memory], text: str, *, method: str, chunks: int) -> Memory:
    """Embed and insert the summary memory (id from the job id); an earlier attempt's row wins."""
    [vector] = await get_embedder().embed([text])
    digest = content_hash(text)
    meta: dict[str, Any] = {"kind": "summary", "method": method, "source_count": len(sources),
                            "job_id": str(job.id), "chunks": chunks}
    if len(sources) <= SOURCE_IDS_IN_METADATA:
        meta["source_ids"] = [str(m.id) for m in sources]
    scope = {field: job.payload.get(field) or _shared(sources, field) for field in SCOPES}
    if "source_ids" not in meta and scope["run_id"] is not None:
        meta["run_id"] = scope["run_id"]
    row = dict(id=memory_id(job.id, 0), org_id=job.org_id, content=text, meta=meta, content_hash=digest,
               embedding=vector, embedded_hash=digest, source_job_id=job.id, source_index=0, **scope)
    async with session_scope() as session:
        if (await session.get(Memory, row["id"])) is None:  # an earlier attempt's row needs no more room
            await limits.reserve_memories(session, job.org_id, 1)
        await store.add_many(session, [row], job_id=job.id, actor=job.actor, meta={"source": "summary"})
        await session.commit()
        return (await session.execute(select(Memory).where(Memory.id == memory_id(job.id, 0)))).scalar_one()


def _shared(sources: list[Memory], field: str) -> str | None:
    """The scope value every source has, or None when they differ."""
    values = {getattr(m, field) for m in sources}
    return values.pop() if len(values) == 1 else None


def _result(row: Memory, chars_in: int, **extra: Any) -> dict[str, Any]:
    return {"memory_id": str(row.id), "method": row.meta.get("method"), "sources": row.meta.get("source_count"),
            "chars_in": chars_in, "chars_out": len(row.content), **extra}
