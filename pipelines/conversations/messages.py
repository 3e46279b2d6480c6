"""Posting a message: stored as history, and for a user message an `agent_turn` job submitted with it.

The message row and its turn commit together. One turn runs at a time in a conversation (a second
user message while one is queued or running is 409 `conversation_busy`): turns read the history the
previous one wrote. A replayed Idempotency-Key returns the message and turn it first made.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid

from sqlalchemy import cast, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from core.embedder import get_embedder
from core.errors import AppError, Conflict, InvalidInput
from pipelines.agents.store import get_agent
from pipelines.conversations import store
from pipelines.jobs import lifecycle
from schemas.conversations import MessageCreate
from schemas.enums import JobKind, JobStatus
from schemas.permissions import Principal
from schemas.tables import Conversation, Job, Message

log = logging.getLogger(__name__)
KEY_NAMESPACE = uuid.UUID("9d5e2b1c-2f4a-4c7e-8b1d-5a6f3e2d1c0b")
EMBED_AT_POST_SECONDS = 2.0  # longer, and the post goes on without the vector: the turn embeds the message


async def active_turn(session: AsyncSession, org_id: uuid.UUID, conversation_id: uuid.UUID) -> Job | None:
    """The conversation's turn that is queued or running, if any."""
    return (await session.execute(select(Job).where(
        Job.org_id == org_id, Job.kind == JobKind.AGENT_TURN.value,
        Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)),
        Job.payload["conversation_id"].astext == str(conversation_id)).limit(1))).scalar_one_or_none()


async def _check_tool_answer(session: AsyncSession, conversation: Conversation, call_id: str) -> None:
    asked = (await session.execute(select(Message.id).where(
        Message.conversation_id == conversation.id, Message.role == "assistant", Message.deleted_at.is_(None),
        Message.tool_calls.op("@>")(cast([{"id": call_id}], JSONB))).limit(1))).scalar_one_or_none()
    if asked is None:
        raise InvalidInput(f"no assistant message of this conversation made a tool call with id {call_id!r}",
                           code="tool_call_unknown", details={"tool_call_id": call_id})


async def post_message(session: AsyncSession, who: Principal, conversation_id: uuid.UUID, body: MessageCreate, *,
                       key: str | None) -> tuple[Message, Job | None]:
    """Add the message (and its turn, for a user message that wants an answer) on the caller's session."""
    wants_turn = body.role == "user" and body.respond
    # The user's words are embedded while the rows are checked: the turn recalls memories with this
    # vector (the worker need not embed it), and conversation search finds the message by meaning.
    embedding = asyncio.ensure_future(_embed(body.content)) if wants_turn else None
    try:
        return await _post(session, who, conversation_id, body, key=key, embedding=embedding)
    finally:
        if embedding is not None and not embedding.done():
            embedding.cancel()


async def _embed(content: str) -> list[float] | None:
    """The message's embedding, or None (the worker embeds it) if the model is slow or failing now."""
    try:
        [vector] = await asyncio.wait_for(get_embedder().embed([content], urgent=True), EMBED_AT_POST_SECONDS)
    except (TimeoutError, AppError) as exc:
        log.info("message not embedded at post (%s); its turn embeds it", exc or "timed out")
        return None
    return vector


async def _post(session: AsyncSession, who: Principal, conversation_id: uuid.UUID, body: MessageCreate, *,
                key: str | None, embedding: asyncio.Future | None) -> tuple[Message, Job | None]:
    conversation = await store.get_conversation(session, who.org_id, conversation_id, for_update=True)
    agent = await get_agent(session, who.org_id, conversation.agent_id)
    if body.role == "tool":
        await _check_tool_answer(session, conversation, body.tool_call_id or "")
    fields = dict(role=body.role, content=body.content, name=body.name, tool_call_id=body.tool_call_id)
    if body.role != "user" or not body.respond:
        return await store.append_message(session, conversation, **fields), None
    message_id = uuid.uuid5(KEY_NAMESPACE, f"{who.org_id}:{key}") if key else uuid.uuid4()
    replay = await session.get(Message, message_id) if key else None
    if replay is None:
        busy = await active_turn(session, who.org_id, conversation.id)
        if busy is not None:
            raise Conflict("this conversation is answering another message: wait for its turn to end (or cancel "
                           "it), then post again", code="conversation_busy", details={"job_id": str(busy.id)})
    # The body's hash makes the same key with another message a 409 (the job's request hash covers the payload).
    body_hash = hashlib.sha256(body.model_dump_json().encode()).hexdigest()[:32]
    # Before the quota lock, which is held to the commit: the organization's other posts must not wait on it.
    vector = await embedding if embedding is not None and replay is None else None
    payload = {"conversation_id": str(conversation.id), "agent_id": str(agent.id), "message_id": str(message_id),
               "max_steps": body.max_steps, "request": body_hash}
    job, created = await lifecycle.submit(session, who, kind=JobKind.AGENT_TURN, payload=payload,
                                          total=body.max_steps or agent.max_steps, key=key)
    if not created:
        message = await session.get(Message, uuid.UUID(job.payload["message_id"]))
        return message, job
    message = await store.append_message(session, conversation, id=message_id, job_id=job.id, step_key="input",
                                         embedding=vector, **fields)
    return message, job
