"""Tool API models: a tool's code, the JSON Schema of its arguments, its timeout and limits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.inputs import INT32_MAX

Language = Literal["python", "bash", "javascript"]
# A tool's name is also the Python function the runner calls, and what an agent's model sees.
TOOL_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
MAX_SOURCE_CHARS = 200_000
MAX_ARGUMENT_BYTES = 262_144


class ToolLimits(BaseModel):
    """Resource limits of one execution; an omitted one takes the service default (`AGENTMEM_TOOL_*`)."""

    model_config = ConfigDict(extra="forbid")
    cpu_seconds: int | None = Field(default=None, ge=1, le=INT32_MAX,
                                    description="CPU time (RLIMIT_CPU); past it: `cpu_limit`.")
    memory_mb: int | None = Field(default=None, ge=16, le=INT32_MAX, description="Address space (RLIMIT_AS); past it: "
                                  "`memory_limit`. JavaScript: the V8 heap limit.")
    processes: int | None = Field(default=None, ge=1, le=INT32_MAX,
                                  description="Processes and threads of the execution at once.")
    file_size_mb: int | None = Field(default=None, ge=1, le=INT32_MAX, description="Largest file the tool may write.")
    open_files: int | None = Field(default=None, ge=16, le=INT32_MAX, description="Open file descriptors.")


class ToolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=TOOL_NAME, description="Unique in the organization (case-insensitive); letters, "
                      "digits, `_` and `-`. Built-in names (`file_save`, `file_read`, `file_search`) are taken.")
    description: str = Field(default="", max_length=4000, description="What the tool does, for people and models.")
    json_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, description=(
        "JSON Schema (draft 2020-12) of the arguments object; a request's arguments are validated against it."))
    language: Language
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS, description=(
        "The code. It runs in a fresh working directory holding `args.json` (the arguments), which it also gets "
        "as JSON on stdin. Python: `args` is a global; a function named like the tool is called with the "
        "arguments as keywords and its return value printed as JSON."))
    tags: list[str] = Field(default_factory=list, max_length=20)
    timeout_seconds: float | None = Field(default=None, gt=0, description="Wall-clock timeout (default "
                                          "`AGENTMEM_TOOL_TIMEOUT_SECONDS`, at most `…_MAX_SECONDS`).")
    limits: ToolLimits = Field(default_factory=ToolLimits)

    @model_validator(mode="after")
    def _tags(self) -> ToolCreate:
        if any(not t or len(t) > 50 for t in self.tags):
            raise ValueError("tags are 1 to 50 characters")
        self.tags = list(dict.fromkeys(self.tags))
        return self


class ToolUpdate(BaseModel):
    """Fields to change; omitted ones stay. `timeout_seconds: null` returns to the default."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, pattern=TOOL_NAME)
    description: str | None = Field(default=None, max_length=4000)
    json_schema: dict[str, Any] | None = None
    language: Language | None = None
    source: str | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_CHARS)
    tags: list[str] | None = Field(default=None, max_length=20)
    timeout_seconds: float | None = Field(default=None, gt=0)
    limits: ToolLimits | None = None

    @model_validator(mode="after")
    def _not_null(self) -> ToolUpdate:
        for name in ("name", "description", "json_schema", "language", "source", "tags", "limits"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` can't be null")
        return self


class ToolExecute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Validated against the tool's `json_schema`.")


class ToolOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    json_schema: dict[str, Any]
    language: Language | Literal["builtin"]
    source: str | None = Field(description="Null for built-in tools.")
    tags: list[str]
    timeout_seconds: float | None
    limits: ToolLimits
    builtin: bool = Field(description="A built-in tool (the file tools): listed for every organization, read-only.")
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ToolOut:
        return cls(id=row.id, name=row.name, description=row.description, json_schema=row.json_schema,
                   language=row.language, source=row.source, tags=list(row.tags or []),
                   timeout_seconds=row.timeout_seconds, limits=ToolLimits(**(row.limits or {})), builtin=False,
                   created_at=row.created_at, updated_at=row.updated_at)
