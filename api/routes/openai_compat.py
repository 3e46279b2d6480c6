"""The OpenAI-compatible door: `POST /v1/chat/completions` and `GET /v1/models`, so OpenAI clients talk to
agents (`base_url=…/v1`, the API key as their `api_key`). Errors keep the API's one shape; OpenAI clients
read its `error.message` and `error.code`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response
from fastapi.responses import StreamingResponse

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited, note_for_audit
from api.routing import CheckedRoute
from api.streaming import chunk_stream
from pipelines.conversations import openai_compat as door
from pipelines.jobs import lifecycle
from schemas.common import ErrorOut
from schemas.memories import ScopeId
from schemas.openai_compat import ChatCompletion, ChatCompletionRequest, ModelList
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/v1", tags=["openai"],
                   responses=error_responses(401, 403, 422, 429, 503))
Writer = Annotated[Principal, Depends(Allow(P.CONVERSATIONS_WRITE))]
Reader = Annotated[Principal, Depends(Allow(P.AGENTS_READ))]
TURN_FAILED = "The agent turn failed: its job's error code (`details.job_id`); `x-should-retry: false`"
COMPLETION_RESPONSES = {
    200: {"description": "The answer (`chat.completion`), or with `stream: true` its chunks "
                         "(`chat.completion.chunk`, then `data: [DONE]`).", "content": {"text/event-stream": {}}},
    404: {"model": ErrorOut, "description": "`model_not_found`: no agent of your organization has this id or name; "
                                            "`conversation_not_found`"},
    409: {"model": ErrorOut, "description": "`conversation_busy`: the conversation is answering another message "
                                            "(OpenAI clients retry); `cancelled`: the turn was cancelled"},
    500: {"model": ErrorOut, "description": f"{TURN_FAILED}, ours to fix (`internal_error`)"},
    502: {"model": ErrorOut, "description": f"{TURN_FAILED}: the model provider refused (`llm_rejected`, "
                                            "`llm_output_invalid`)"},
    504: {"model": ErrorOut, "description": f"{TURN_FAILED}: `time_limit_exceeded`"},
}


@router.post("/chat/completions", response_model=ChatCompletion, responses=COMPLETION_RESPONSES)
@audited("message", target=lambda message_id: message_id, failed_too=True,
         details=lambda body, conversation: {"conversation_id": conversation, "model": body.model,
                                             "stream": body.stream, "via": "openai"})
async def create_chat_completion(
        body: ChatCompletionRequest, response: Response, session: SessionDep, who: Writer,
        key: IdempotencyKey = None,
        user: Annotated[ScopeId | None, Header(alias="X-AgentMem-User", description="The end user (wins over "
                                               "the body's `user`).")] = None,
        conversation_id: Annotated[uuid.UUID | None, Header(alias="X-AgentMem-Conversation", description="A "
                                                            "conversation of this agent to post to.")] = None):
    """Talk to an agent as to an OpenAI chat model: `model` is the agent (id or exact name).

    The server keeps the history: only the **last** message, the user's new one, is posted (earlier ones
    are what the client already has, and are ignored), to the conversation in `X-AgentMem-Conversation`,
    else to the agent's OpenAI-door conversation with the end user (`X-AgentMem-User`, else `user`;
    created on first use). The answer is an agent turn, with its memories and its own tools (they stay
    on the server: a request with `tools` is `422 client_tools_unsupported`); `content` is what the agent
    said in the turn. `stream: true` answers with chunks as the agent writes (`stream_options.include_usage`
    adds a usage chunk). `temperature`, `top_p` and `max_tokens` are ignored: the agent's settings apply.
    `X-Job-Id` and `X-Conversation-Id` name the turn and the conversation; the completion id is
    `chatcmpl-<job id>`. A failed turn answers with its job's error code and `x-should-retry: false`
    (the message is stored; sending it again adds another)."""
    asked = await door.ask(session, who, body, user=user or body.user, conversation_id=conversation_id, key=key)
    await lifecycle.commit(session)
    note_for_audit(message_id=asked.message.id, conversation=str(asked.conversation.id))
    headers = {"X-Job-Id": str(asked.job.id), "X-Conversation-Id": str(asked.conversation.id),
               "X-Message-Id": str(asked.message.id)}
    if body.stream:
        chunks = door.completion_chunks(who.org_id, asked.job, model=body.model,
                                        include_usage=bool(body.stream_options and body.stream_options.include_usage))
        return StreamingResponse(chunk_stream(chunks), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.headers.update(headers)
    return await door.wait_for_completion(who.org_id, asked.job, model=body.model)


@router.get("/models", response_model=ModelList)
async def list_models(session: SessionDep, who: Reader) -> ModelList:
    """Your organization's agents as models (oldest first, at most 1,000): `id` is the agent's id, which a
    request's `model` takes (so does the agent's exact name, shown in `name`)."""
    return await door.list_models(session, who.org_id)
