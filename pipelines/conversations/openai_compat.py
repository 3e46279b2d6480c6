"""The OpenAI-compatible door: a chat completion request becomes a user message and its `agent_turn` job.

`model` names an agent of the organization (by id or exact name). The server keeps the history, so a
request adds only its last message, to the conversation named by `X-AgentMem-Conversation`, else to
the door's conversation of that agent and end user (found or created under an advisory lock, so two
first requests at once make one). The turn's answer is read back from its job: waited for, or turned
into `chat.completion.chunk`s as its `token` events arrive. What the agent says over the whole turn is
the answer: text it wrote before calling its own tools (which stay internal), then its final message,
separated by a blank line, the same streamed or not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import cast, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import session_scope
from core.errors import AppError, InvalidInput, NotFound
from pipelines.conversations import messages as posting, store
from pipelines.jobs import follow
from pipelines.llm.configs import require_provider
from schemas.conversations import ConversationCreate, MessageCreate
from schemas.enums import EventType
from schemas.events import JobEvent
from schemas.openai_compat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelList,
    ModelOut,
    Usage,
)
from schemas.permissions import Principal
from schemas.tables import Agent, Conversation, Job, Message

DOOR_METADATA = {"agentmem_door": "openai"}
STEP_SEPARATOR = "\n\n"
MAX_MODELS = 1_000
# A failed turn's HTTP status, by its job's error code: whose fault it was. Unlisted codes are ours (500).
FAILURE_STATUS = {
    "cancelled": 409, "conversation_gone": 409, "message_gone": 409,
    "llm_not_configured": 422, "url_not_allowed": 422,
    "llm_rejected": 502, "llm_output_invalid": 502,
    "llm_unavailable": 503, "transient_failure": 503, "upstream_unavailable": 503,
    "infrastructure_unavailable": 503,
    "time_limit_exceeded": 504,
}


class TurnFailed(AppError):
    """The agent turn answering the request failed or was cancelled: its job's error code and message, with a
    status that says whose fault it was. The message is stored, so sending the request again adds another:
    `x-should-retry: false` tells OpenAI clients not to."""

    def __init__(self, code: str, message: str, job_id: uuid.UUID) -> None:
        super().__init__(f"the agent turn {'was cancelled' if code == 'cancelled' else 'failed'}: {message}",
                         code=code, details={"job_id": str(job_id)},
                         headers={"x-should-retry": "false", "X-Job-Id": str(job_id)})
        self.status_code = FAILURE_STATUS.get(code, 500)


@dataclass
class Asked:
    """A posted request: the agent, its conversation, the stored user message and the turn answering it."""

    agent: Agent
    conversation: Conversation
    message: Message
    job: Job


async def resolve_model(session: AsyncSession, org_id: uuid.UUID, model: str) -> Agent:
    """The live agent of the organization a request's `model` names: its id, else its exact name."""
    try:
        agent_id = uuid.UUID(model)
    except ValueError:
        agent_id = None
    named = Agent.name == model
    rows = list((await session.execute(select(Agent).where(
        Agent.org_id == org_id, Agent.deleted_at.is_(None), or_(named, Agent.id == agent_id) if agent_id else named)
        .order_by(Agent.created_at).limit(10))).scalars())
    by_id = [a for a in rows if a.id == agent_id]
    if by_id:
        return by_id[0]
    if len(rows) > 1:
        raise InvalidInput(f"{len(rows)} agents are called {model!r}: name one by its id (GET /v1/models)",
                           code="model_ambiguous", details={"param": "model", "agent_ids": [str(a.id) for a in rows]})
    if not rows:
        raise NotFound(f"the model {model!r} does not exist: name an agent of your organization by its id or name "
                       "(GET /v1/models lists them)", code="model_not_found", details={"param": "model"})
    return rows[0]


async def door_conversation(session: AsyncSession, who: Principal, agent: Agent, *, user: str | None,
                            conversation_id: uuid.UUID | None) -> Conversation:
    """The named conversation (of this agent and user), else the door's conversation of the agent and user."""
    if conversation_id is not None:
        conversation = await store.get_conversation(session, who.org_id, conversation_id)
        if conversation.agent_id != agent.id:
            raise NotFound(f"conversation {conversation_id} not found for this model", code="conversation_not_found",
                           details={"conversation_id": str(conversation_id)})
        if user is not None and conversation.user_id != user:
            raise InvalidInput(f"conversation {conversation_id} is not the conversation of user {user!r}",
                               code="conversation_user_mismatch", details={"conversation_id": str(conversation_id)})
        return conversation
    # One finder at a time per (agent, user), until the transaction ends: two first requests make one conversation.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                          {"k": f"openai-door:{agent.id}:{user or ''}"})
    found = (await session.execute(select(Conversation).where(
        Conversation.org_id == who.org_id, Conversation.agent_id == agent.id, store.LIVE,
        Conversation.user_id == user if user is not None else Conversation.user_id.is_(None),
        Conversation.meta.op("@>")(cast(DOOR_METADATA, JSONB))).order_by(Conversation.created_at).limit(1))
    ).scalar_one_or_none()
    if found is not None:
        return found
    title = f"OpenAI-compatible chat with {user}" if user else "OpenAI-compatible chat"
    return await store.create_conversation(session, who.org_id, agent.id, ConversationCreate(
        user_id=user, title=title, metadata=DOOR_METADATA))


def check_supported(request: ChatCompletionRequest) -> None:
    """Refuse what the door can't honour rather than answer something else than was asked."""
    if request.tools or request.functions:
        raise InvalidInput("tools defined by the client are not supported: the agent calls its own tools on the "
                           "server; send the request without `tools`", code="client_tools_unsupported",
                           details={"param": "tools"})


async def ask(session: AsyncSession, who: Principal, request: ChatCompletionRequest, *, user: str | None,
              conversation_id: uuid.UUID | None, key: str | None) -> Asked:
    """Post the request's new user message and submit the turn answering it (the caller commits)."""
    check_supported(request)
    agent = await resolve_model(session, who.org_id, request.model)
    config_id = (agent.llm or {}).get("config_id")
    # Checked now, so a request that can't be answered stores nothing.
    await require_provider(session, who.org_id, uuid.UUID(config_id) if config_id else None)
    conversation = await door_conversation(session, who, agent, user=user, conversation_id=conversation_id)
    message, job = await posting.post_message(session, who, conversation.id,
                                              MessageCreate(content=request.new_message()), key=key)
    return Asked(agent, conversation, message, job)


def _failure(job_id: uuid.UUID, event: JobEvent) -> TurnFailed:
    error = event.data.get("error") or {}
    return TurnFailed(error.get("code") or event.type.value, error.get("message") or event.type.value, job_id)


def _usage(result: dict[str, Any]) -> Usage:
    usage = result.get("usage") or {}
    return Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
                 total_tokens=usage.get("total_tokens", 0))


def _finish_reason(result: dict[str, Any]) -> str:
    return "length" if result.get("stop_reason") == "max_steps" else "stop"


async def turn_text(job_id: uuid.UUID) -> str:
    """What the agent said over the turn: its assistant messages' text, in order, blank-line separated."""
    async with session_scope() as session:
        steps = await store.turn_messages(session, job_id)
    return STEP_SEPARATOR.join(m.content for m in steps if m.role == "assistant" and m.content)


async def wait_for_completion(org_id: uuid.UUID, job: Job, *, model: str) -> ChatCompletion:
    """Wait for the turn to end and answer with what it said (TurnFailed if it didn't succeed)."""
    async for event in follow.follow_job(org_id, job.id, None):
        if event is None or not event.type.terminal:
            continue
        if event.type is not EventType.SUCCEEDED:
            raise _failure(job.id, event)
        result = event.data.get("result") or {}
        content = await turn_text(job.id)
        return ChatCompletion(id=f"chatcmpl-{job.id}", created=int(job.created_at.timestamp()), model=model,
                              choices=[Choice(message=AssistantMessage(content=content),
                                              finish_reason=_finish_reason(result))],
                              usage=_usage(result))
    raise AppError(f"the events of job {job.id} ended before its outcome")  # follow_job always ends with one


class _Text:
    """The text streamed so far, per step. A retried attempt streams a step again from its start: only
    what goes beyond what was already sent is sent."""

    def __init__(self) -> None:
        self.sent: dict[int, str] = {}
        self.attempt: dict[int, str] = {}

    def restart(self) -> None:
        self.attempt.clear()

    def add(self, step: int, piece: str) -> str:
        """The new text to send for this piece of a step."""
        now = self.attempt.get(step, "") + piece
        self.attempt[step] = now
        before = self.sent.get(step, "")
        if len(now) <= len(before):
            return ""
        new = now[len(before):]
        if not before and any(said for earlier, said in self.sent.items() if earlier < step):
            new = STEP_SEPARATOR + new
        self.sent[step] = now
        return new


async def completion_chunks(org_id: uuid.UUID, job: Job, *, model: str, include_usage: bool
                            ) -> AsyncIterator[ChatCompletionChunk | None]:
    """The turn as chunks: the role, its text as written, the finish reason, the usage if asked for. `None`:
    nothing happened for a heartbeat interval. A failed turn raises TurnFailed after the text it wrote."""
    base = {"id": f"chatcmpl-{job.id}", "created": int(job.created_at.timestamp()), "model": model}
    yield ChatCompletionChunk(**base, choices=[ChunkChoice(delta=Delta(role="assistant", content=""))])
    said = _Text()
    async for event in follow.follow_job(org_id, job.id, "0-0"):  # from the start: the worker may be ahead
        if event is None:
            yield None
        elif event.type is EventType.STARTED:
            said.restart()
        elif event.type is EventType.TOKEN:
            new = said.add(int(event.data.get("step") or 0), str(event.data.get("text") or ""))
            if new:
                yield ChatCompletionChunk(**base, choices=[ChunkChoice(delta=Delta(content=new))])
        elif event.type.terminal:
            if event.type is not EventType.SUCCEEDED:
                raise _failure(job.id, event)
            result = event.data.get("result") or {}
            yield ChatCompletionChunk(**base, choices=[ChunkChoice(delta=Delta(),
                                                                   finish_reason=_finish_reason(result))])
            if include_usage:
                yield ChatCompletionChunk(**base, choices=[], usage=_usage(result))
            return


async def list_models(session: AsyncSession, org_id: uuid.UUID) -> ModelList:
    """The organization's live agents, as models, oldest first."""
    agents = (await session.execute(select(Agent).where(Agent.org_id == org_id, Agent.deleted_at.is_(None))
                                    .order_by(Agent.created_at, Agent.id).limit(MAX_MODELS))).scalars()
    return ModelList(data=[ModelOut(id=str(a.id), created=int(a.created_at.timestamp()), name=a.name)
                           for a in agents])
