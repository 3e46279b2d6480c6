"""Summary API models: what to summarize, and how."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.memories import ScopeId

MAX_SUMMARY_SOURCES = 10_000


class SummaryMode(StrEnum):
    """How a summary is written. The values are wire format."""

    AUTO = "auto"
    ABSTRACTIVE = "abstractive"
    EXTRACTIVE = "extractive"


class SummaryCreate(BaseModel):
    """A conversation to summarize: a run's memories, or chosen memories."""

    model_config = ConfigDict(extra="forbid")

    run_id: ScopeId | None = Field(default=None, description="Summarize this run's memories (summaries excluded), "
                                   "as stored when the request was made.")
    user_id: ScopeId | None = Field(default=None, description="With `run_id`: only this user's memories of the run.")
    agent_id: ScopeId | None = Field(default=None, description="With `run_id`: only this agent's memories of the run.")
    memory_ids: list[uuid.UUID] | None = Field(
        default=None, min_length=1, max_length=MAX_SUMMARY_SOURCES,
        description=f"Summarize these memories (1 to {MAX_SUMMARY_SOURCES}, your organization's, not deleted).")
    mode: SummaryMode = Field(default=SummaryMode.AUTO, description=(
        "`abstractive`: written by the organization's LLM provider (422 `llm_not_configured` without one). "
        "`extractive`: the conversation's most central sentences, picked with the local embedding model. "
        "`auto`: abstractive when a provider is configured, else extractive."))
    max_sentences: int | None = Field(default=None, ge=1, le=100, description="Extractive: the most sentences to "
                                      "keep (default `AGENTMEM_SUMMARY_MAX_SENTENCES`).")
    target_chars: int | None = Field(default=None, ge=50, le=20_000, description="Length budget of the summary in "
                                     "characters (default `AGENTMEM_SUMMARY_TARGET_CHARS`). Extractive summaries "
                                     "never exceed it; a model is asked to keep to it.")

    @model_validator(mode="after")
    def _one_source(self) -> SummaryCreate:
        if (self.run_id is None) == (self.memory_ids is None):
            raise ValueError("give either `run_id` or `memory_ids`")
        if self.memory_ids is not None and (self.user_id is not None or self.agent_id is not None):
            raise ValueError("`user_id` and `agent_id` narrow a `run_id`; with `memory_ids` leave them out")
        if self.memory_ids is not None:
            self.memory_ids = list(dict.fromkeys(self.memory_ids))  # a repeated id is one source
        return self
