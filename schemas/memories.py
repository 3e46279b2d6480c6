"""Memory API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.jobs import JobOut

MAX_BATCH_ITEMS = 10_000
MAX_CONTENT_CHARS = 32_000
MAX_QUERY_CHARS = 4_000

ScopeId = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT_CHARS)]


class MemoryIn(BaseModel):
    """One memory to store."""

    model_config = ConfigDict(extra="forbid")

    content: Content = Field(description=f"The text to remember, 1 to {MAX_CONTENT_CHARS} characters.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Any JSON object; filterable in search.")
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None

    @model_validator(mode="after")
    def _content_not_blank(self) -> "MemoryIn":
        if not self.content.strip():
            raise ValueError("content must contain non-whitespace text")
        return self


class MemoryBatchIn(BaseModel):
    """Memories to ingest as one job. Scope fields given here apply to items that leave them unset."""

    model_config = ConfigDict(extra="forbid")

    items: list[MemoryIn] = Field(min_length=1, max_length=MAX_BATCH_ITEMS,
                                  description=f"1 to {MAX_BATCH_ITEMS} memories.")
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None


class MemoryUpdate(BaseModel):
    """Fields to change; a content change is re-embedded by a job."""

    model_config = ConfigDict(extra="forbid")

    content: Content | None = None
    metadata: dict[str, Any] | None = Field(default=None, description="Replaces the metadata object whole.")

    @model_validator(mode="after")
    def _something_to_change(self) -> "MemoryUpdate":
        if self.content is None and self.metadata is None:
            raise ValueError("give `content`, `metadata` or both")
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
    source_job_id: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, m: Any) -> "MemoryOut":
        return cls(
            id=m.id, content=m.content, metadata=m.meta, user_id=m.user_id, agent_id=m.agent_id,
            run_id=m.run_id, content_hash=m.content_hash,
            embedding_status="ready" if m.embedded_hash == m.content_hash else "pending",
            source_job_id=m.source_job_id, created_at=m.created_at, updated_at=m.updated_at,
        )


class MemoryUpdateOut(BaseModel):
    memory: MemoryOut
    job: JobOut | None = Field(default=None, description="The re-embedding job when the content changed.")


class MemorySearchIn(BaseModel):
    """A search by meaning within an organization, narrowed by scope and metadata."""

    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
    user_id: ScopeId | None = None
    agent_id: ScopeId | None = None
    run_id: ScopeId | None = None
    metadata: dict[str, Any] | None = Field(default=None, description="Exact-match filter: every key must equal.")
    top_k: int = Field(default=10, ge=1, le=100)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description="Drop hits below this cosine similarity.")


class SearchHit(BaseModel):
    memory: MemoryOut
    score: float = Field(description="Cosine similarity between the query and the memory, -1 to 1.")


class SearchOut(BaseModel):
    hits: list[SearchHit]
