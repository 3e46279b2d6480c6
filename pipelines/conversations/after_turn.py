"""What a finished turn leaves behind: its messages embedded (for conversation search), what the agent
learns from it (`memory_extraction`), and a rolling-summary job once history outgrows the budget.

Follow-up jobs are keyed by the turn's id, so a turn run again after a crash queues each of them once.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from core.db import session_scope
from core.embedder import get_embedder, model_identity
from core.errors import AppError
from core.llm import ProviderSettings
from core.settings import get_settings
from pipelines.conversations import store
from pipelines.conversations.context import chat_params
from pipelines.jobs import lifecycle, rows as job_rows
from pipelines.llm.configs import provider_for
from schemas.enums import JobKind, MemoryExtraction
from schemas.permissions import Principal
from schemas.tables import Agent, Conversation, Message

log = logging.getLogger(__name__)
EMBED_BATCH = 64
SUMMARIZE_AT = 0.75   # share of the message budget history may fill before older messages are summarized
KEEP_AFTER = 0.5      # share of it left verbatim after a summary


async def embed_missing(conversation_id: Any) -> int:
    """Embed the conversation's messages that have text and no embedding yet (a few batches at most)."""
    done = 0
    for _ in range(4):
        async with session_scope() as session:
            rows = (await session.execute(select(Message.id, Message.content).where(
                Message.conversation_id == conversation_id, Message.embedding.is_(None),
                Message.role.in_(("user", "assistant")), Message.content != "", Message.deleted_at.is_(None))
                .order_by(Message.seq.desc()).limit(EMBED_BATCH))).all()
        if not rows:
            break
        vectors = await get_embedder().embed([content for _, content in rows])
        model = model_identity()
        async with session_scope() as session:
            for (message_id, _), vector in zip(rows, vectors, strict=True):
                await session.execute(update(Message).where(Message.id == message_id)
                                      .values(embedding=vector, embedding_model=model))
            await session.commit()
        done += len(rows)
        if len(rows) < EMBED_BATCH:
            break
    return done


def summary_cut(messages: list[Message], budget: int) -> int | None:
    """The last `seq` a rolling summary should cover, or None while history fits comfortably.

    The cut falls just before a user message, so a tool call is never parted from its results.
    """
    if sum(m.tokens for m in messages) <= budget * SUMMARIZE_AT:
        return None
    kept = 0
    for i in range(len(messages) - 1, 0, -1):
        kept += messages[i].tokens
        if kept >= budget * KEEP_AFTER and messages[i].role == "user":
            return messages[i - 1].seq
    return None


async def follow_up(job: Any, agent: Agent, conversation: Conversation, steps: list[Message]) -> None:
    """Embed the turn's messages, then queue what the agent learns and any summary due."""
    try:
        await embed_missing(conversation.id)
    except AppError as exc:  # the text side still finds them; the next turn tries again
        log.warning("could not embed the turn's messages yet: %s", exc)
    said = [m for m in steps if m.role in ("user", "assistant") and m.content.strip()]
    who = job_rows.job_principal(job)
    async with session_scope() as session:
        if agent.memory_extraction == MemoryExtraction.FACTS.value and said:
            payload = {"messages": [{"role": m.role, "content": m.content} for m in said],
                       "user_id": conversation.user_id, "agent_id": str(agent.id), "run_id": None,
                       "metadata": {"source": "conversation", "conversation_id": str(conversation.id)}}
            await _submit(session, who, JobKind.EXTRACT_FACTS, payload, len(said), f"turn:{job.id}:facts")
        elif agent.memory_extraction == MemoryExtraction.TURNS.value and said:
            items = [{"content": m.content, "user_id": conversation.user_id, "agent_id": str(agent.id),
                      "run_id": str(conversation.id),
                      "metadata": {"source": "conversation", "role": m.role, "conversation_id": str(conversation.id),
                                   "seq": m.seq}} for m in said]
            await _submit(session, who, JobKind.INGEST_MEMORIES, {"items": items}, len(items),
                          f"turn:{job.id}:turns")
        fresh = await store.get_conversation(session, conversation.org_id, conversation.id)
        provider: ProviderSettings | None = None
        try:
            provider = await provider_for(session, job.org_id)
        except AppError:
            provider = None
        budget = chat_params(agent, provider).budget
        history = await store.recent_messages(session, conversation.id, after_seq=fresh.summary_upto, upto_seq=None,
                                              limit=get_settings().agent_history_max_messages)
        cut = summary_cut(history, budget)
        if cut is not None and cut > fresh.summary_upto:
            await _submit(session, who, JobKind.SUMMARIZE_CONVERSATION,
                          {"conversation_id": str(conversation.id), "upto_seq": cut}, 1,
                          f"conversation-summary:{conversation.id}:{cut}")
        await lifecycle.commit(session)


async def _submit(session: Any, who: Principal, kind: JobKind, payload: dict[str, Any], total: int, key: str) -> None:
    try:
        await lifecycle.submit(session, who, kind=kind, payload=payload, total=total, key=key)
    except AppError as exc:
        # A quota refusing a follow-up must not fail the turn the user already has; the next turn asks again.
        log.warning("turn follow-up %s not queued: %s", kind.value, exc)

