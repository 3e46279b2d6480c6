"""Agent API models: an agent, a change to it, its compiled prompt."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.blocks import BlockOut
from schemas.enums import MemoryExtraction
from schemas.inputs import Metadata

MAX_TEMPLATE_CHARS = 50_000
MAX_SYSTEM_CHARS = 100_000
MAX_BLOCKS_AT_CREATE = 50


class AgentLLM(BaseModel):
    """How the agent calls its chat model; every field optional (unset: the LLM config's, else the default)."""

    model_config = ConfigDict(extra="forbid")
    config_id: uuid.UUID | None = Field(default=None, description="The organization's LLM config to use; unset: "
                                        "the organization's default.")
    model: str | None = Field(default=None, min_length=1, max_length=200, description="Model name, overriding the "
                              "config's.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000, description="Tokens kept for each answer.")
    context_window: int | None = Field(default=None, ge=512, le=10_000_000, description="The model's context "
                                       "window in tokens; the prompt is fitted into it less `max_tokens`.")


CHAT_FIELDS = {
    "llm": Field(default=None, description="The agent's chat model and its parameters."),
    "max_steps": Field(default=None, ge=1, le=50, description="LLM calls a turn may make before it stops "
                       "(each tool round is one)."),
    "memory_top_k": Field(default=None, ge=0, le=50, description="Memories recalled into each turn's prompt."),
    "memory_extraction": Field(default=None, description="What each turn teaches memory: `off`, `facts` (an "
                               "`extract_facts` job on the turn's messages) or `turns` (the messages stored as "
                               "memories)."),
    "tool_ids": Field(default=None, max_length=50, description="Registered tools the agent may call (the memory "
                      "and file tools are always available)."),
    "mcp_server_ids": Field(default=None, max_length=20, description="MCP servers whose tools (as of each "
                            "server's last test) the agent may call; the model sees them as "
                            "`mcp__<server name>__<tool name>`."),
}


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
    llm: AgentLLM | None = CHAT_FIELDS["llm"]
    max_steps: int | None = CHAT_FIELDS["max_steps"]
    memory_top_k: int | None = CHAT_FIELDS["memory_top_k"]
    memory_extraction: MemoryExtraction | None = CHAT_FIELDS["memory_extraction"]
    tool_ids: list[uuid.UUID] | None = CHAT_FIELDS["tool_ids"]
    mcp_server_ids: list[uuid.UUID] | None = CHAT_FIELDS["mcp_server_ids"]

    @model_validator(mode="after")
    def _unique(self) -> AgentCreate:
        self.block_ids = list(dict.fromkeys(self.block_ids))
        if self.tool_ids is not None:
            self.tool_ids = list(dict.fromkeys(self.tool_ids))
        if self.mcp_server_ids is not None:
            self.mcp_server_ids = list(dict.fromkeys(self.mcp_server_ids))
        return self


class AgentUpdate(BaseModel):
    """Fields to change; omitted ones stay. `prompt_template: null` goes back to the default template."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    system: str | None = Field(default=None, max_length=MAX_SYSTEM_CHARS)
    prompt_template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    metadata: Metadata | None = None
    llm: AgentLLM | None = CHAT_FIELDS["llm"]
    max_steps: int | None = CHAT_FIELDS["max_steps"]
    memory_top_k: int | None = CHAT_FIELDS["memory_top_k"]
    memory_extraction: MemoryExtraction | None = CHAT_FIELDS["memory_extraction"]
    tool_ids: list[uuid.UUID] | None = CHAT_FIELDS["tool_ids"]
    mcp_server_ids: list[uuid.UUID] | None = CHAT_FIELDS["mcp_server_ids"]

    @model_validator(mode="after")
    def _not_null(self) -> AgentUpdate:
        for name in ("name", "system", "metadata", "llm", "max_steps", "memory_top_k", "memory_extraction",
                     "tool_ids", "mcp_server_ids"):
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
    llm: AgentLLM
    max_steps: int
    memory_top_k: int
    memory_extraction: MemoryExtraction
    tool_ids: list[uuid.UUID]
    mcp_server_ids: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any, blocks: list[Any]) -> AgentOut:
        return cls(id=row.id, name=row.name, description=row.description, system=row.system,
                   prompt_template=row.prompt_template, metadata=row.meta,
                   blocks=[BlockOut.from_row(b) for b in blocks], llm=AgentLLM.model_validate(row.llm or {}),
                   max_steps=row.max_steps, memory_top_k=row.memory_top_k,
                   memory_extraction=row.memory_extraction, tool_ids=list(row.tool_ids or []),
                   mcp_server_ids=list(row.mcp_server_ids or []),
                   created_at=row.created_at, updated_at=row.updated_at)


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
