"""Memory API models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from schemas.inputs import METADATA_HELP, Metadata
from schemas.jobs import JobOut

MAX_BATCH_ITEMS = 10_000
MAX_CONTENT_CHARS = 32_000
# What one `infer` request may send the LLM: a conversation window, not an archive.
MAX_INFER_CHARS = 64_000

EXPIRES_HELP = ("When the memory expires (ISO 8601 with a time zone): from then on it is gone from reads and "
                "search, and the next `purge` deletes it.")


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once in UTC (years 1 to 9999)") from None


ExpiresAt = Annotated[AwareDatetime, AfterValidator(_in_utc)]
ScopeId = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT_CHARS)]


class MemoryIn(BaseModel):
    """One memory to store."""

    model_config = ConfigDict(extra="forbid")

    content: Content = Field(description=f"The text to remember, 1 to {MAX_CONTENT_CHARS} characters.")
    metadata: Metadata = Field(default_factory=dict, description=f"{METADATA_HELP} Filterable in search.")
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None
    role: Literal["user", "assistant", "system"] | None = Field(
        default=None, description="Who said it, when the items are a conversation (`infer`). Without `infer` "
                                  "it is kept in the memory's metadata as `role`.")
    expires_at: ExpiresAt | None = Field(default=None, description=EXPIRES_HELP + " Not with `infer`.")

    @model_validator(mode="after")
    def _content_not_blank(self) -> MemoryIn:
        if not self.content.strip():
            raise ValueError("content must contain non-whitespace text")
        return self


class MemoryBatchIn(BaseModel):
    """Memories to ingest as one job. Scope fields given here apply to items that leave them unset."""

    model_config = ConfigDict(extra="forbid")

    items: list[MemoryIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS,
                                  validation_alias=AliasChoices("items", "messages"),
                                  description=f"1 to {MAX_BATCH_ITEMS} memories (or, as `messages`, a "
                                              "conversation of `{role, content}` items).")
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None
    infer: bool = Field(default=False, description="Treat the items as a conversation: an LLM extracts the facts "
                                                   "in it and merges them into the scope's memories.")
    deduplicate: bool = Field(default=False, description="Without `infer`: skip items whose exact or near "
                                                         "duplicate is already stored in their scope or earlier "
                                                         "in the batch.")

    @model_validator(mode="after")
    def _one_conversation(self) -> MemoryBatchIn:
        if not self.infer:
            return self
        if any(i.expires_at is not None for i in self.items):
            raise ValueError("`expires_at` is for memories stored as given, not with `infer`")
        scopes = {(i.user_id or self.user_id, i.agent_id or self.agent_id, i.run_id or self.run_id)
                  for i in self.items}
        if len(scopes) > 1:
            raise ValueError("with `infer`, every message belongs to one scope: give user_id / agent_id / run_id "
                             "once, on the batch")
        chars = sum(len(i.content) for i in self.items)
        if chars > MAX_INFER_CHARS:
            raise ValueError(f"with `infer`, the messages may hold at most {MAX_INFER_CHARS} characters in all "
                             f"({chars} given); send the conversation in several requests")
        return self


class MemoryUpdate(BaseModel):
    """Fields to change; a content change is re-embedded by a job."""

    model_config = ConfigDict(extra="forbid")

    content: Content | None = None
    metadata: Metadata | None = Field(default=None, description=f"Replaces the metadata object whole. "
                                                                 f"{METADATA_HELP}")
    expires_at: ExpiresAt | None = Field(default=None, description=EXPIRES_HELP + " `null` removes it.")

    @model_validator(mode="after")
    def _something_to_change(self) -> MemoryUpdate:
        if self.content is None and self.metadata is None and "expires_at" not in self.model_fields_set:
            raise ValueError("give `content`, `metadata`, `expires_at` or several")
        if self.content is not None and not self.content.strip():
            raise ValueError("content must contain non-whitespace text")
        return self


class MemoryOut(BaseModel):
    id: uuid.UUID
    content: str
    metadata: dict[str, Any]
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    content_hash: str
    embedding_status: str = Field(description="`ready` when the embedding matches the content, else `pending`.")
    embedding_model: str | None = Field(default=None, description="The model that computed the embedding "
                                                                   "(`model` or `model@version`).")
    expires_at: datetime | None = Field(default=None, description="When the memory expires, if ever.")
    source_job_id: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, m: Any) -> MemoryOut:
        return cls(
            id=m.id, content=m.content, metadata=m.meta, user_id=m.user_id, agent_id=m.agent_id,
            run_id=m.run_id, content_hash=m.content_hash,
            embedding_status="ready" if m.embedded_hash == m.content_hash else "pending",
            embedding_model=m.embedding_model, expires_at=m.expires_at,
            source_job_id=m.source_job_id, created_at=m.created_at, updated_at=m.updated_at,
        )


class MemoryUpdateOut(BaseModel):
    memory: MemoryOut
    job: JobOut | None = Field(default=None, description="The re-embedding job when the content changed.")


class MemoryHistoryOut(BaseModel):
    """One version of a memory: the change, the text before and after, and what made it."""

    id: uuid.UUID
    memory_id: uuid.UUID
    version: int = Field(description="1 for the ADD that created the memory, then 2, 3, … per change.")
    event: Literal["ADD", "UPDATE", "DELETE"]
    old_content: str | None = None
    new_content: str | None = None
    metadata: dict[str, Any] = Field(description="Provenance: `source` (`ingest`, `extraction`, `api`), and the "
                                                 "extracted `fact` or the `request_id` behind the change.")
    job_id: uuid.UUID | None = Field(default=None, description="The job that made the change (none for REST edits).")
    actor: str | None = Field(default=None, description="Who asked for it: `user:<id>` or `api_key:<id>`.")
    created_at: datetime

    @classmethod
    def from_row(cls, h: Any) -> MemoryHistoryOut:
        return cls(id=h.id, memory_id=h.memory_id, version=h.version, event=h.event, old_content=h.old_content,
                   new_content=h.new_content, metadata=h.meta, job_id=h.job_id, actor=h.actor,
                   created_at=h.created_at)
