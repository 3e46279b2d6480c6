"""Conversations and their messages: rows, numbering, paging.

A message's `seq` comes from its conversation's `last_seq`, bumped in the transaction that inserts
it, so numbers follow commit order without gaps. A turn's messages carry `(job_id, step_key)`, unique:
`append_step` returns the row an earlier attempt already wrote instead of writing it twice.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from core.embedder import model_identity
from core.errors import NotFound
from pipelines.agents.store import get_agent
from pipelines.conversations.tokens import message_tokens
from pipelines.pages import newest_first
from schemas.conversations import ConversationCreate, ConversationUpdate
from schemas.tables import Conversation, Message

LIVE = Conversation.deleted_at.is_(None)


async def create_conversation(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID,
                              data: ConversationCreate) -> Conversation:
    """A new conversation of a live agent of the organization."""
    agent = await get_agent(session, org_id, agent_id)
    row = Conversation(org_id=org_id, agent_id=agent.id, user_id=data.user_id, title=data.title, meta=data.metadata)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def get_conversation(session: AsyncSession, org_id: uuid.UUID, conversation_id: uuid.UUID, *,
                           for_update: bool = False) -> Conversation:
    """A live conversation of the organization (NotFound otherwise, also for other organizations')."""
    query = select(Conversation).where(Conversation.id == conversation_id, Conversation.org_id == org_id, LIVE)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found", code="conversation_not_found",
                       details={"conversation_id": str(conversation_id)})
    return row


async def list_conversations(session: AsyncSession, org_id: uuid.UUID, agent_id: uuid.UUID, *, user_id: str | None,
                             limit: int, cursor: str | None) -> tuple[list[Conversation], str | None]:
    """A page of an agent's live conversations, newest first, optionally one user's."""
    await get_agent(session, org_id, agent_id)
    query = select(Conversation).where(Conversation.org_id == org_id, Conversation.agent_id == agent_id, LIVE)
    if user_id is not None:
        query = query.where(Conversation.user_id == user_id)
    return await newest_first(session, query, Conversation, limit=limit, cursor=cursor)


async def update_conversation(session: AsyncSession, org_id: uuid.UUID, conversation_id: uuid.UUID,
                              change: ConversationUpdate) -> Conversation:
    """Change a conversation's title or metadata."""
    row = await get_conversation(session, org_id, conversation_id, for_update=True)
    fields = change.model_dump(exclude_unset=True)
    values: dict[str, Any] = {"title": fields["title"]} if "title" in fields else {}
    if "metadata" in fields:
        values["meta"] = fields["metadata"]
    return (await session.execute(
        update(Conversation).where(Conversation.id == row.id).values(**values, updated_at=text("now()"))
        .returning(Conversation).execution_options(populate_existing=True))).scalar_one()


async def delete_conversation(session: AsyncSession, org_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """Soft-delete a conversation and its messages: they leave reads and search, the rows stay for audit."""
    row = await get_conversation(session, org_id, conversation_id, for_update=True)
    await session.execute(update(Conversation).where(Conversation.id == row.id)
                          .values(deleted_at=text("now()"), updated_at=text("now()")))
    await session.execute(update(Message).where(Message.conversation_id == row.id, Message.deleted_at.is_(None))
                          .values(deleted_at=text("now()")))


async def _next_seq(session: AsyncSession, conversation_id: uuid.UUID) -> int:
    return (await session.execute(
        update(Conversation).where(Conversation.id == conversation_id)
        .values(last_seq=Conversation.last_seq + 1, updated_at=text("now()"))
        .returning(Conversation.last_seq))).scalar_one()


def _row(conversation: Conversation, seq: int, fields: dict[str, Any]) -> Message:
    message = Message(org_id=conversation.org_id, conversation_id=conversation.id, agent_id=conversation.agent_id,
                      user_id=conversation.user_id, seq=seq, **fields)
    message.tokens = message_tokens(message.role, message.content, message.tool_calls, message.name)
    return message


async def append_message(session: AsyncSession, conversation: Conversation, **fields: Any) -> Message:
    """Add a message at the end of the conversation (the caller commits)."""
    if fields.get("embedding") is not None:
        fields["embedding_model"] = model_identity()
    message = _row(conversation, await _next_seq(session, conversation.id), fields)
    session.add(message)
    await session.flush()
    await session.refresh(message)
    return message


async def step_message(session: AsyncSession, job_id: uuid.UUID, step_key: str) -> Message | None:
    """The message a turn's step wrote, if it was written."""
    return (await session.execute(select(Message).options(defer(Message.embedding)).where(
        Message.job_id == job_id, Message.step_key == step_key))).scalar_one_or_none()


async def lock(session: AsyncSession, conversation_id: uuid.UUID) -> None:
    """Take the conversation's row lock for the transaction: writers of its messages go one at a time."""
    await session.execute(select(Conversation.id).where(Conversation.id == conversation_id).with_for_update())


async def append_step(session: AsyncSession, conversation: Conversation, job_id: uuid.UUID, step_key: str,
                      **fields: Any) -> tuple[Message, bool]:
    """Write a turn's step once: (message, written now). The conversation's row lock orders writers."""
    await lock(session, conversation.id)
    existing = await step_message(session, job_id, step_key)
    if existing is not None:
        return existing, False
    return await append_message(session, conversation, job_id=job_id, step_key=step_key, **fields), True


async def turn_messages(session: AsyncSession, job_id: uuid.UUID) -> list[Message]:
    """The messages one turn has written so far (its user message first), in order."""
    return list((await session.execute(select(Message).options(defer(Message.embedding))
                                       .where(Message.job_id == job_id).order_by(Message.seq))).scalars())


async def message_embedding(session: AsyncSession, message_id: uuid.UUID) -> list[float] | None:
    """A message's embedding, if it has one made by the current model."""
    row = (await session.execute(select(Message.embedding, Message.embedding_model)
                                 .where(Message.id == message_id))).one_or_none()
    if row is None or row.embedding is None or row.embedding_model != model_identity():
        return None
    return [float(x) for x in row.embedding]


async def recent_messages(session: AsyncSession, conversation_id: uuid.UUID, *, after_seq: int,
                          upto_seq: int | None, limit: int) -> list[Message]:
    """Up to `limit` newest live messages with after_seq < seq ≤ upto_seq, oldest first."""
    query = select(Message).options(defer(Message.embedding)).where(
        Message.conversation_id == conversation_id, Message.seq > after_seq, Message.deleted_at.is_(None))
    if upto_seq is not None:
        query = query.where(Message.seq <= upto_seq)
    rows = list((await session.execute(query.order_by(Message.seq.desc()).limit(limit))).scalars())
    return rows[::-1]


async def list_messages(session: AsyncSession, org_id: uuid.UUID, conversation_id: uuid.UUID, *, limit: int,
                        after: int | None, before: int | None, newest_first_: bool) -> tuple[list[Message], str | None]:
    """A page of a conversation's messages by `seq` (oldest first, or newest first), and the next cursor."""
    await get_conversation(session, org_id, conversation_id)
    query = select(Message).options(defer(Message.embedding)).where(
        Message.conversation_id == conversation_id, Message.org_id == org_id, Message.deleted_at.is_(None))
    if after is not None:
        query = query.where(Message.seq > after)
    if before is not None:
        query = query.where(Message.seq < before)
    order = Message.seq.desc() if newest_first_ else Message.seq
    rows = list((await session.execute(query.order_by(order).limit(limit + 1))).scalars())
    next_cursor = str(rows[limit - 1].seq) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def count_before(session: AsyncSession, conversation_id: uuid.UUID, *, after_seq: int, before_seq: int) -> int:
    """Live messages with after_seq < seq < before_seq."""
    return (await session.execute(select(func.count()).select_from(Message).where(
        Message.conversation_id == conversation_id, Message.deleted_at.is_(None),
        Message.seq > after_seq, Message.seq < before_seq))).scalar_one()


async def messages_between(session: AsyncSession, conversation_id: uuid.UUID, *, after_seq: int,
                           before_seq: int) -> list[Message]:
    """Live messages with after_seq < seq < before_seq, oldest first (what a summary must cover)."""
    return list((await session.execute(select(Message).options(defer(Message.embedding)).where(
        Message.conversation_id == conversation_id, Message.deleted_at.is_(None),
        Message.seq > after_seq, Message.seq < before_seq).order_by(Message.seq))).scalars())
