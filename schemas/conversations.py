"""Conversation API models: conversations, their messages, a posted message and the turn it starts,
the context a turn would send, and conversation search."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.enums import MessageRole
from schemas.inputs import Metadata
from schemas.jobs import JobOut
from schemas.memories import ScopeId

MAX_MESSAGE_CHARS = 100_000
MAX_TITLE_CHARS = 500


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: ScopeId | None = Field(default=None, description="The end user the agent talks with: memories are "
                                    "recalled and written in this user's scope.")
    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    metadata: Metadata = Field(default_factory=dict)


class ConversationUpdate(BaseModel):
    """Fields to change; omitted ones stay."""

    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _something(self) -> ConversationUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send `title`, `metadata` or both")
        if "metadata" in self.model_fields_set and self.metadata is None:
            raise ValueError("`metadata` can't be null")
        return self


class ConversationOut(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    user_id: str | None
    title: str | None
    metadata: dict[str, Any]
    message_count: int = Field(description="Messages written so far (the last message's `seq`).")
    summary: str | None = Field(description="The rolling summary of older messages, which turns send instead of "
                                            "them once they no longer fit the model's context.")
    summary_upto: int = Field(description="The summary covers messages 1 … this `seq`.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ConversationOut:
        return cls(id=row.id, agent_id=row.agent_id, user_id=row.user_id, title=row.title, metadata=row.meta,
                   message_count=row.last_seq, summary=row.summary, summary_upto=row.summary_upto,
                   created_at=row.created_at, updated_at=row.updated_at)


class ToolCallOut(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="The JSON text of the arguments, as the model wrote it.")


class MessageCreate(BaseModel):
    """A message to add. A `user` message starts an agent turn (unless `respond` is false); other roles are
    stored as history (importing a conversation, or answering a tool call the client ran itself)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "system", "assistant", "tool"] = "user"
    content: str = Field(max_length=MAX_MESSAGE_CHARS, description="The message text.")
    name: str | None = Field(default=None, max_length=200, description="The speaker's name (or the tool's).")
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=200,
                                     description="For `tool` messages: the id of the call this answers.")
    respond: bool = Field(default=True, description="For `user` messages: start an agent turn that answers it.")
    max_steps: int | None = Field(default=None, ge=1, le=50, description="This turn's step limit (LLM calls); "
                                  "default: the agent's.")

    @model_validator(mode="after")
    def _consistent(self) -> MessageCreate:
        if self.role in ("user", "system") and not self.content.strip():
            raise ValueError(f"a {self.role} message needs non-whitespace `content`")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a `tool` message needs `tool_call_id`: the id of the tool call it answers")
        if self.role != "tool" and self.tool_call_id is not None:
            raise ValueError("only `tool` messages carry `tool_call_id`")
        return self


class SocketSend(BaseModel):
    """A WebSocket `send`: a user message for a conversation, answered by an agent turn the socket follows."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["send"]
    conversation_id: uuid.UUID
    content: str = Field(max_length=MAX_MESSAGE_CHARS)
    request_id: str | None = Field(default=None, max_length=200, description="Echoed in the `sent` or `error` "
                                   "reply, to match replies with sends.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255, description="As the "
                                        "Idempotency-Key header: the same key and message give the same turn.")
    max_steps: int | None = Field(default=None, ge=1, le=50)

    def message(self) -> MessageCreate:
        """The message to post."""
        return MessageCreate(content=self.content, max_steps=self.max_steps)


class MessageOut(BaseModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int = Field(description="1, 2, … in the order the conversation was written.")
    role: MessageRole
    content: str
    name: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    tool_call_id: str | None = None
    tokens: int = Field(description="The message's estimated size in a prompt, in tokens.")
    prompt_tokens: int | None = Field(default=None, description="Assistant messages: the prompt tokens of the "
                                                                "LLM call that wrote it.")
    completion_tokens: int | None = None
    job_id: uuid.UUID | None = Field(default=None, description="The agent turn that wrote it (or that it started).")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> MessageOut:
        return cls(id=row.id, conversation_id=row.conversation_id, seq=row.seq, role=row.role, content=row.content,
                   name=row.name, tool_calls=row.tool_calls, tool_call_id=row.tool_call_id, tokens=row.tokens,
                   prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens, job_id=row.job_id,
                   created_at=row.created_at)


class MessagePosted(BaseModel):
    message: MessageOut
    job: JobOut | None = Field(default=None, description="The agent turn answering it: follow it at "
                                                         "/api/v1/jobs/{id}/events.")


class ContextMemory(BaseModel):
    id: uuid.UUID
    content: str
    score: float
    tokens: int


class ContextTokens(BaseModel):
    system: int
    memories: int
    summary: int
    messages: int
    total: int = Field(description="What the prompt holds, estimated.")
    budget: int = Field(description="The context window less the tokens kept for the answer.")
    context_window: int


class ContextOut(BaseModel):
    """Exactly what the agent's next turn would send, and why."""

    agent_id: uuid.UUID
    conversation_id: uuid.UUID | None
    model: str | None = Field(description="The chat model the turn would call (null: no LLM configured).")
    system: str = Field(description="The system prompt: the agent's compiled prompt, the recalled memories, the "
                                    "summary of older messages.")
    memories: list[ContextMemory] = Field(description="Memories recalled for the query, best first.")
    summary: str | None
    messages: list[MessageOut] = Field(description="The recent messages that fit the budget, oldest first.")
    omitted_messages: int = Field(description="Older messages left out for the budget; the summary covers them "
                                              "(`summary_upto`), the rest is summarized before it is sent.")
    tokens: ContextTokens


class MessageSearchIn(BaseModel):
    """Search messages by meaning and by words, in one agent's, user's or conversation's scope."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=2000)
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    agent_id: uuid.UUID | None = None
    user_id: ScopeId | None = None
    conversation_id: uuid.UUID | None = None
    roles: list[Literal["user", "assistant", "system", "tool"]] | None = Field(
        default=None, min_length=1, max_length=4, description="Only these roles (default: user and assistant).")
    top_k: int = Field(default=10, ge=1, le=100)


class MessageHit(BaseModel):
    message: MessageOut
    score: float = Field(description="The mode's score: cosine (vector), BM25 text score (text) or fused (hybrid, "
                                     "in (0, 1)).")


class MessageSearchOut(BaseModel):
    hits: list[MessageHit] = Field(description="Best first.")
    mode: str
