"""Core-memory block API models: a block, a change to it, its versions, a revert, a rewrite request."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.inputs import INT32_MAX, Metadata
from schemas.memories import ScopeId

# Hard ceiling of the schema; the service's own ceiling is `AGENTMEM_BLOCK_MAX_LIMIT` (checked by the pipeline).
MAX_LIMIT = 1_000_000
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True,
                                         pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]


class RewriteStrategy(StrEnum):
    """How a block over its threshold is rewritten. The values are wire format."""

    AUTO = "auto"
    SUMMARIZE = "summarize"
    PRESERVE_IMPORTANT = "preserve_important"
    PRESERVE_RECENT = "preserve_recent"
    OFF = "off"


class BlockVersionReason(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REVERT = "revert"
    REWRITE = "rewrite"
    DELETE = "delete"


STRATEGY_HELP = ("What a write past the rewrite threshold queues: `summarize` (the organization's LLM rewrites it), "
                 "`preserve_important` (keeps the most central sentences, offline), `preserve_recent` (keeps the "
                 "newest sentences and lines, offline), `auto` (`summarize` when an LLM provider is configured, "
                 "else `preserve_important`) or `off` (never rewritten automatically).")


class BlockCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label = Field(description="Name of the block in prompts, e.g. `human`, `persona`; letters, digits, "
                         "`_`, `-` and `.`. Unique among the blocks of an agent.")
    value: str = Field(default="", max_length=MAX_LIMIT, description="The block's text; at most `limit` characters.")
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT, description="Hard limit in characters (default "
                              "`AGENTMEM_BLOCK_DEFAULT_LIMIT`). A longer value is refused with 422 `block_too_long`.")
    description: str | None = Field(default=None, max_length=10_000, description="What the block is for; shown "
                                    "to the model by the default prompt template.")
    read_only: bool = Field(default=False, description="Refuse every change but `read_only: false` (409 "
                            "`block_read_only`); rewrite jobs leave it alone.")
    user_id: ScopeId | None = Field(default=None, description="Make it this user's block; unset: the block belongs "
                                    "to the agents it is attached to.")
    rewrite_strategy: RewriteStrategy = Field(default=RewriteStrategy.AUTO, description=STRATEGY_HELP)
    metadata: Metadata = Field(default_factory=dict)


class BlockUpdate(BaseModel):
    """Fields to change; omitted ones stay. Send `If-Match: "<version>"` to change only the version you read."""

    model_config = ConfigDict(extra="forbid")
    label: Label | None = None
    value: str | None = Field(default=None, max_length=MAX_LIMIT)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    description: str | None = Field(default=None, max_length=10_000)
    read_only: bool | None = None
    user_id: ScopeId | None = None
    rewrite_strategy: RewriteStrategy | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _not_null(self) -> BlockUpdate:
        for name in ("label", "value", "limit", "read_only", "rewrite_strategy", "metadata"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` can't be null")
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        return self


class BlockOut(BaseModel):
    id: uuid.UUID
    label: str
    value: str
    limit: int
    chars: int = Field(description="Characters in `value`.")
    description: str | None
    read_only: bool
    user_id: str | None
    rewrite_strategy: RewriteStrategy
    metadata: dict[str, Any]
    version: int = Field(description="Bumped by every change; also the `ETag`. Send it back as `If-Match`.")
    created_at: datetime
    updated_at: datetime
    rewrite_job_id: uuid.UUID | None = Field(default=None, description="In the answer to a write that took the "
                                             "block past its rewrite threshold: the `block_rewrite` job queued "
                                             "for it (or already queued).")

    @classmethod
    def from_row(cls, row: Any, rewrite_job_id: uuid.UUID | None = None) -> BlockOut:
        return cls(id=row.id, label=row.label, value=row.value, limit=row.char_limit, chars=len(row.value),
                   description=row.description, read_only=row.read_only, user_id=row.user_id,
                   rewrite_strategy=row.rewrite_strategy, metadata=row.meta, version=row.version,
                   created_at=row.created_at, updated_at=row.updated_at, rewrite_job_id=rewrite_job_id)


class BlockVersionOut(BaseModel):
    version: int
    reason: BlockVersionReason = Field(description="`create`, `update`, `revert`, `rewrite` or `delete`.")
    label: str
    value: str
    limit: int
    description: str | None
    read_only: bool
    details: dict[str, Any] = Field(description="Provenance: a revert's `reverted_to`, a rewrite's `strategy` and "
                                    "`based_on` version.")
    actor: str | None = Field(description="Who asked (`user:<id>` / `api_key:<id>`), for API changes.")
    job_id: uuid.UUID | None = Field(description="The `block_rewrite` job, for rewrites.")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> BlockVersionOut:
        return cls(version=row.version, reason=row.reason, label=row.label, value=row.value, limit=row.char_limit,
                   description=row.description, read_only=row.read_only, details=row.meta, actor=row.actor,
                   job_id=row.job_id, created_at=row.created_at)


class BlockRevert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=INT32_MAX,
                         description="The version whose label, value, limit and description come back "
                                     "(as a new version: history is never rewritten).")


class BlockRewriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: RewriteStrategy | None = Field(default=None, description="Default: the block's `rewrite_strategy` "
                                             "(`off` there means `auto` here: you asked). `summarize` needs an LLM "
                                             "provider, else 422 `llm_not_configured`.")
    target_chars: int | None = Field(default=None, ge=1, le=MAX_LIMIT, description="Length to aim for (default "
                                     "`AGENTMEM_BLOCK_REWRITE_TARGET` of the limit); never above the limit.")

    @model_validator(mode="after")
    def _not_off(self) -> BlockRewriteIn:
        if self.strategy is RewriteStrategy.OFF:
            raise ValueError("`off` only stops automatic rewrites; name a strategy or leave it out")
        return self
