"""Conversations with agents: their messages, the agent turns that answer them, and what a turn would send."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.admission import SearchSlot
from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited, not_audited
from api.routing import CheckedRoute
from api.streaming import sse_response
from core.errors import NotFound
from pipelines.agents.store import get_agent
from pipelines.conversations import context as turn_context, messages as posting, store
from pipelines.conversations.agent_tools import turn_tools
from pipelines.jobs import follow, lifecycle
from pipelines.llm.configs import provider_for
from schemas.common import ErrorOut, Page
from schemas.conversations import (
    ContextMemory,
    ContextOut,
    ContextTokens,
    ConversationCreate,
    ConversationOut,
    ConversationUpdate,
    MessageCreate,
    MessageOut,
    MessagePosted,
)
from schemas.jobs import JobOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1", tags=["conversations"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.CONVERSATIONS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.CONVERSATIONS_WRITE))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "No such conversation (or agent) in your organization"}}
BUSY = {409: {"model": ErrorOut, "description": "`conversation_busy`: a turn of this conversation is still queued "
                                                "or running (`details.job_id`); or `idempotency_key_reused`"}}
SSE_OR_JSON = {202: {"model": MessagePosted, "description": "The message and the agent turn answering it.",
                     "content": {"text/event-stream": {}}},
               201: {"model": MessagePosted, "description": "The message, stored as history (no turn)."}}


@router.post("/agents/{agent_id}/conversations", status_code=status.HTTP_201_CREATED,
             response_model=ConversationOut, responses=NOT_FOUND)
@audited("conversation", target=lambda result: result.id, details=lambda agent_id: {"agent_id": str(agent_id)})
async def create_conversation(agent_id: uuid.UUID, body: ConversationCreate, session: SessionDep,
                              who: Writer) -> ConversationOut:
    """Start a conversation with an agent, optionally with one end user (`user_id`): the agent recalls that
    user's memories, and what it learns is stored in that user's scope."""
    row = await store.create_conversation(session, who.org_id, agent_id, body)
    await session.commit()
    return ConversationOut.from_row(row)


@router.get("/agents/{agent_id}/conversations", response_model=Page[ConversationOut], responses=NOT_FOUND)
async def list_conversations(agent_id: uuid.UUID, session: SessionDep, who: Reader,
                             user_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
                             limit: Annotated[int, Query(ge=1, le=200)] = 50,
                             cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[ConversationOut]:
    """An agent's conversations, newest first, optionally one user's."""
    rows, next_cursor = await store.list_conversations(session, who.org_id, agent_id, user_id=user_id, limit=limit,
                                                       cursor=cursor)
    return Page[ConversationOut](items=[ConversationOut.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get("/conversations/{conversation_id}", response_model=ConversationOut, responses=NOT_FOUND)
async def get_conversation(conversation_id: uuid.UUID, session: SessionDep, who: Reader) -> ConversationOut:
    """A conversation, with its message count and rolling summary."""
    return ConversationOut.from_row(await store.get_conversation(session, who.org_id, conversation_id))


@router.patch("/conversations/{conversation_id}", response_model=ConversationOut, responses=NOT_FOUND)
@audited("conversation", target=lambda conversation_id: conversation_id, failed_too=True,
         details=lambda body: {"fields": sorted(body.model_fields_set)})
async def update_conversation(conversation_id: uuid.UUID, body: ConversationUpdate, session: SessionDep,
                              who: Writer) -> ConversationOut:
    """Change a conversation's title or metadata."""
    row = await store.update_conversation(session, who.org_id, conversation_id, body)
    await session.commit()
    return ConversationOut.from_row(row)


@router.delete("/conversations/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=NOT_FOUND)
@audited("conversation", target=lambda conversation_id: conversation_id, failed_too=True)
async def delete_conversation(conversation_id: uuid.UUID, session: SessionDep, who: Writer) -> Response:
    """Delete a conversation (soft): it and its messages leave reads and search; the rows stay for audit."""
    await store.delete_conversation(session, who.org_id, conversation_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/conversations/{conversation_id}/messages", response_model=Page[MessageOut], responses=NOT_FOUND)
async def list_messages(conversation_id: uuid.UUID, session: SessionDep, who: Reader,
                        order: Annotated[str, Query(pattern="^(asc|desc)$", description="`asc`: oldest first "
                                                    "(default); `desc`: newest first.")] = "asc",
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$", description="From `next_cursor`.")]
                        = None) -> Page[MessageOut]:
    """A conversation's messages in order (`seq`), with the tool calls and results of its turns."""
    position = int(cursor) if cursor is not None else None
    rows, next_cursor = await store.list_messages(
        session, who.org_id, conversation_id, limit=limit, newest_first_=order == "desc",
        after=position if order == "asc" else None, before=position if order == "desc" else None)
    return Page[MessageOut](items=[MessageOut.from_row(m) for m in rows], next_cursor=next_cursor)


def _wants_stream(request: Request, stream: bool | None) -> bool:
    if stream is not None:
        return stream
    return "text/event-stream" in request.headers.get("accept", "")


@router.post("/conversations/{conversation_id}/messages", status_code=status.HTTP_202_ACCEPTED,
             response_model=MessagePosted, responses={**NOT_FOUND, **BUSY, **SSE_OR_JSON})
@audited("message", target=lambda result: result.message.id if isinstance(result, MessagePosted) else None,
         details=lambda conversation_id, body: {"conversation_id": str(conversation_id), "role": body.role})
async def post_message(conversation_id: uuid.UUID, body: MessageCreate, request: Request, response: Response,
                       session: SessionDep, who: Writer, key: IdempotencyKey = None,
                       stream: Annotated[bool | None, Query(description="Answer with the turn's event stream "
                                                           "(also chosen by `Accept: text/event-stream`).")] = None):
    """Add a message. A `user` message is answered by an agent turn, a job: 202 with the message and the job.

    The turn runs in a worker: it recalls memories relevant to the message, calls the agent's model with
    its tools until a final answer (or `max_steps`), and stores every step. Follow it at
    `/api/v1/jobs/{id}/events` (Server-Sent Events, resumable with `Last-Event-ID`) or the WebSocket:
    `token` (text as written), `tool_call`, `tool_result`, `message` (each stored message), `usage`, then
    `succeeded` with the final message in `result.message`. With `?stream=true` (or `Accept:
    text/event-stream`) this request answers with that stream at once; a dropped connection loses
    nothing, the turn goes on. One turn runs at a time per conversation (409 `conversation_busy`).

    Other roles are stored as history without a turn (201): `system`, `assistant`, and `tool` (answering an
    earlier tool call by its `tool_call_id`).
    """
    message, job = await posting.post_message(session, who, conversation_id, body, key=key)
    await lifecycle.commit(session)
    if job is None:
        response.status_code = status.HTTP_201_CREATED
        return MessagePosted(message=MessageOut.from_row(message))
    if _wants_stream(request, stream):
        # From the stream's start: the worker may already have written to it.
        sse = await sse_response(follow.follow_job(who.org_id, job.id, "0-0"))
        sse.headers.update({"X-Job-Id": str(job.id), "X-Message-Id": str(message.id)})
        return sse
    return MessagePosted(message=MessageOut.from_row(message), job=JobOut.from_row(job))


@router.get("/agents/{agent_id}/context", response_model=ContextOut, responses=NOT_FOUND)
@not_audited
async def inspect_context(slot: SearchSlot, agent_id: uuid.UUID, session: SessionDep, who: Reader,
                          conversation_id: uuid.UUID | None = None,
                          query: Annotated[str | None, Query(min_length=1, max_length=4000, description="The next "
                                                             "user message (memories are recalled for it).")] = None
                          ) -> ContextOut:
    """Exactly what the agent's next turn would send: its system prompt (compiled blocks, recalled memories,
    the summary of older messages), the memories with their scores, the recent messages that fit, and the
    token counts against the model's budget. Shows why the agent knows what it knows."""
    agent = await get_agent(session, who.org_id, agent_id)
    conversation = None
    if conversation_id is not None:
        conversation = await store.get_conversation(session, who.org_id, conversation_id)
        if conversation.agent_id != agent.id:
            raise_not_found(conversation_id)
    config_id = (agent.llm or {}).get("config_id")
    provider = await provider_for(session, who.org_id, uuid.UUID(config_id) if config_id else None)
    params = turn_context.chat_params(agent, provider)
    memories = await turn_context.recall(session, who.org_id, agent, conversation.user_id if conversation else None,
                                         query or "", agent.memory_top_k) if query else []
    tools = (await turn_tools(session, agent)).definitions
    built = await turn_context.build_context(session, agent, conversation, params=params, memories=memories,
                                             tools=tools)
    return ContextOut(agent_id=agent.id, conversation_id=conversation.id if conversation else None,
                      model=params.model, system=built.system,
                      memories=[ContextMemory(id=m.id, content=m.content, score=m.score, tokens=m.tokens)
                                for m in memories],
                      summary=built.summary, messages=[MessageOut.from_row(m) for m in built.messages],
                      omitted_messages=built.omitted, tokens=ContextTokens(**built.tokens))


def raise_not_found(conversation_id: uuid.UUID) -> None:
    """A conversation of another agent looks like no conversation at all."""
    raise NotFound(f"conversation {conversation_id} not found for this agent", code="conversation_not_found",
                   details={"conversation_id": str(conversation_id)})

