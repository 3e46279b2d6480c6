"""Agent API models: an agent, a change to it, its compiled prompt."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.blocks import BlockOut
from schemas.inputs import Metadata

MAX_TEMPLATE_CHARS = 50_000
MAX_SYSTEM_CHARS = 100_000
MAX_BLOCKS_AT_CREATE = 50


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    system: str = Field(default="", max_length=MAX_SYSTEM_CHARS, description="Base instructions: `{{ system }}` in "
                        "the prompt template.")
    prompt_template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS, description=(
        "Jinja2 template (sandboxed) of the system prompt; null: the default, which writes `system` then each "
        "block as `<label>` … `</label>` with its description and limits. It sees `system`, `agent` (id, name, "
        "description, metadata), `blocks` (each: id, label, value, limit, chars, description, read_only, "
        "version) and `block` (the same by label). A syntax error is 422 `template_invalid` with `details.line`."))
    metadata: Metadata = Field(default_factory=dict)
    block_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_BLOCKS_AT_CREATE,
                                       description="Blocks to attach, in this order.")

    @model_validator(mode="after")
    def _unique(self) -> AgentCreate:
        self.block_ids = list(dict.fromkeys(self.block_ids))
        return self


class AgentUpdate(BaseModel):
    """Fields to change; omitted ones stay. `prompt_template: null` goes back to the default template."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    system: str | None = Field(default=None, max_length=MAX_SYSTEM_CHARS)
    prompt_template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _not_null(self) -> AgentUpdate:
        for name in ("name", "system", "metadata"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` can't be null")
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        return self


class AgentOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    system: str
    prompt_template: str | None = Field(description="null: the default template.")
    metadata: dict[str, Any]
    blocks: list[BlockOut] = Field(description="Attached blocks, in the order they were attached.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any, blocks: list[Any]) -> AgentOut:
        return cls(id=row.id, name=row.name, description=row.description, system=row.system,
                   prompt_template=row.prompt_template, metadata=row.meta,
                   blocks=[BlockOut.from_row(b) for b in blocks], created_at=row.created_at,
                   updated_at=row.updated_at)


class PromptBlock(BaseModel):
    id: uuid.UUID
    label: str
    version: int


class PromptOut(BaseModel):
    agent_id: uuid.UUID
    template: str = Field(description="`default` or `custom`.")
    prompt: str = Field(description="The compiled system prompt.")
    chars: int
    blocks: list[PromptBlock] = Field(description="The blocks it was compiled from, at these versions.")
