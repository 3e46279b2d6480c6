"""The `summarize_conversation` job: extend a conversation's rolling summary to cover messages up to a `seq`.

The new summary is the old one and the messages after it, condensed: by the organization's LLM when
it has one, else by the offline extractive summarizer (the sentences most central to the rest). It is
stored with a compare-and-swap on `summary_upto`, so two jobs racing leave one consistent summary and
a redelivered job finds its work done.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import update

from core.db import session_scope
from core.embedder import get_embedder
from core.errors import PermanentJobError
from core.settings import get_settings
from pipelines.conversations import store
from pipelines.jobs.runner import JobContext
from pipelines.llm.configs import provider_for
from pipelines.summaries import abstractive, extractive
from pipelines.summaries.summarize import llm_completer, sentences_of
from schemas.tables import Conversation


def _passage(role: str, content: str) -> str:
    return f"{role.capitalize()}: {' '.join(content.split())}"


async def summarize_conversation(ctx: JobContext) -> dict[str, Any]:
    """Fold messages (summary_upto, upto_seq] into the conversation's summary."""
    job, settings = ctx.job, get_settings()
    upto = int(job.payload["upto_seq"])
    async with session_scope() as session:
        conversation = await session.get(Conversation, uuid.UUID(job.payload["conversation_id"]))
        if conversation is None or conversation.org_id != job.org_id or conversation.deleted_at is not None:
            raise PermanentJobError("the conversation was deleted", code="conversation_gone")
        if conversation.summary_upto >= upto:
            return {"conversation_id": str(conversation.id), "summary_upto": conversation.summary_upto,
                    "skipped": "already covered"}
        base = conversation.summary_upto
        messages = await store.messages_between(session, conversation.id, after_seq=base, before_seq=upto + 1)
        provider = await provider_for(session, job.org_id)
    passages = ([f"Summary so far: {conversation.summary}"] if conversation.summary else []) + [
        _passage(m.role, m.content) for m in messages if m.role in ("user", "assistant") and m.content.strip()]
    target = settings.summary_target_chars
    if not passages:
        text, method = conversation.summary or "", "unchanged"
    elif provider is not None:
        summary = await abstractive.summarize(passages, llm_completer(ctx, provider),
                                              chunk_chars=settings.summary_chunk_chars, target_chars=target,
                                              concurrency=provider.max_concurrency, progress=ctx.progress)
        text, method = summary.text, "abstractive"
    else:
        sentences = sentences_of([SimpleNamespace(content=p) for p in passages], settings.summary_chunk_chars)
        summary = await extractive.summarize(sentences, get_embedder().embed, chunk_chars=settings.summary_chunk_chars,
                                             target_chars=target, max_sentences=settings.summary_max_sentences,
                                             progress=ctx.progress)
        text, method = summary.text, "extractive"
    async with session_scope() as session:
        stored = (await session.execute(
            update(Conversation).where(Conversation.id == conversation.id, Conversation.summary_upto == base)
            .values(summary=text, summary_upto=upto).returning(Conversation.id))).scalar_one_or_none()
        await session.commit()
    return {"conversation_id": str(conversation.id), "summary_upto": upto if stored else None,
            "method": method, "messages": len(messages), "chars": len(text),
            **({} if stored else {"skipped": "another summary was stored first"})}
