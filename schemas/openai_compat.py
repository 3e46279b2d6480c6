"""The OpenAI-compatible door's wire shapes: a chat completion request, its answer, its stream chunks, and the
model list. Fields OpenAI clients send that the door has no use for are accepted and ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from schemas.conversations import MAX_MESSAGE_CHARS
from schemas.inputs import Int32
from schemas.memories import ScopeId

MAX_MESSAGES = 1_000


class ContentPart(BaseModel):
    """One part of a message's content; only `text` parts can be sent to an agent."""

    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=50)
    text: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=200)

    def text(self) -> str:
        """The message's text: its content, or its text parts joined by newlines."""
        if isinstance(self.content, list):
            return "\n".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = Field(default=False, description="Send a last chunk with the turn's token usage.")


class ChatCompletionRequest(BaseModel):
    """A chat completion request, as OpenAI clients send it. The server keeps the conversation: only the
    last message (the user's new one) is posted; the earlier ones are what the client already had."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200, description="An agent of your organization, by id or by "
                       "its exact name (`GET /v1/models` lists them).")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES, description="The last one must "
                                          "be the new `user` message; earlier ones are ignored (the server has "
                                          "the history).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: ScopeId | None = Field(default=None, description="The end user (overridden by `X-AgentMem-User`): "
                                 "their conversation, and their memories.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="Ignored: the agent's own applies.")
    top_p: float | None = Field(default=None, ge=0, le=1, description="Ignored: the agent's own applies.")
    max_tokens: Int32 | None = Field(default=None, ge=1, description="Ignored: the agent's own applies.")
    max_completion_tokens: Int32 | None = Field(default=None, ge=1, description="Ignored: the agent's own "
                                                "applies.")
    n: int | None = Field(default=None, ge=1, le=1, description="One answer per request.")
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128, description="Refused when not "
                                               "empty: the agent's own tools run on the server.")
    functions: list[dict[str, Any]] | None = Field(default=None, max_length=128, description="Refused when not "
                                                   "empty, like `tools`.")

    @model_validator(mode="after")
    def _ends_with_a_user_message(self) -> ChatCompletionRequest:
        last = self.messages[-1]
        if last.role != "user":
            raise ValueError(f"the last message must be the user's new message (role `user`), not `{last.role}`: "
                             "the server keeps the conversation's history, so a request adds one user message")
        if isinstance(last.content, list) and any(part.type != "text" for part in last.content):
            raise ValueError("only text content parts can be sent to an agent")
        if not last.text().strip():
            raise ValueError("the last message needs some text")
        if len(last.text()) > MAX_MESSAGE_CHARS:
            raise ValueError(f"the last message is longer than {MAX_MESSAGE_CHARS} characters")
        return self

    def new_message(self) -> str:
        """The text of the user message this request adds."""
        return self.messages[-1].text()


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = Field(description="`length`: the turn reached its step limit.")
    logprobs: None = None


class ChatCompletion(BaseModel):
    """The agent's answer; `id` is `chatcmpl-<job id>` (the agent turn, also in `X-Job-Id`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: None = None


class Delta(BaseModel):
    """What a chunk adds to the answer; as OpenAI sends it, without the fields it doesn't set."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: None = None


class ModelOut(BaseModel):
    """An agent, as a model: put its `id` in a request's `model` (its name works too)."""

    id: str = Field(description="The agent's id.")
    object: Literal["model"] = "model"
    created: int = Field(description="When the agent was created (Unix time).")
    owned_by: str = "agentmem"
    name: str = Field(description="The agent's name (an AgentMem addition).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]
