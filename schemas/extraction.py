"""What the LLM answers in a fact extraction job: the facts of a conversation, then a decision per fact.

These models validate the model's JSON (core.llm `chat_json`); they are lenient where models commonly
drift (an event in lower case, mem0's `NONE` for no change, an id as a string) and strict elsewhere.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

EVENT_SYNONYMS = {"NONE": "NOOP", "NO_OP": "NOOP", "NO-OP": "NOOP", "KEEP": "NOOP", "CREATE": "ADD",
                  "REMOVE": "DELETE", "CHANGE": "UPDATE"}


class ExtractedFacts(BaseModel):
    """The facts worth remembering in a conversation."""

    facts: list[str] = Field(description="Short, self-contained statements; an empty list when there is none.")


class FactDecision(BaseModel):
    """What to do with one new fact."""

    fact: int = Field(description="Index of the new fact this decision is about.")
    event: Literal["ADD", "UPDATE", "DELETE", "NOOP"]
    id: int | None = Field(default=None, description="Id of the stored memory (UPDATE, DELETE, NOOP).")
    text: str | None = Field(default=None, description="The memory's text after the change (ADD, UPDATE).")

    @field_validator("event", mode="before")
    @classmethod
    def _canonical_event(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.strip().upper()
            return EVENT_SYNONYMS.get(upper, upper)
        return value


class MemoryDecisions(BaseModel):
    """One or more decisions per new fact."""

    decisions: list[FactDecision]
