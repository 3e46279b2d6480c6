"""Maintenance tasks as the API shows them, and a request to run one now."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MaintenanceTaskOut(BaseModel):
    """A maintenance task: what it does and the parameters it takes (a JSON Schema)."""

    name: str = Field(examples=["integrity"])
    description: str
    params_schema: dict[str, Any]
    scopes: list[str] = Field(description="`organization`: works on an organization's data (scheduled per "
                                          "organization); `platform`: on the whole service (scheduled platform-wide, "
                                          "superusers).", examples=[["organization"]])


class MaintenanceRunIn(BaseModel):
    """Run a maintenance task now, with these parameters (see the task's `params_schema`)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, examples=[{}])


class MergedMemory(BaseModel):
    """What the LLM answers in `consolidate`: the one text for near-duplicate memories, or null to keep them."""

    text: str | None = Field(default=None, description="One memory saying everything the given ones say; null "
                                                        "when they say different things.")
