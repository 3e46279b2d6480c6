"""Exports and imports as the API shows them: what to export, and an export's state and archive."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.enums import JobStatus
from schemas.jobs import JobError, JobProgress

Group = Literal["memories", "history", "blocks", "agents", "tools", "conversations"]
ALL_GROUPS: list[Group] = ["memories", "history", "blocks", "agents", "tools", "conversations"]


class ExportIn(BaseModel):
    """What to export: a scope, and which kinds of rows."""

    model_config = ConfigDict(extra="forbid")

    scope: Literal["organization", "user", "agent"] = Field(
        default="organization", description="`organization`: everything; `user`: a user's memories, blocks and "
        "conversations (with their agents); `agent`: an agent's memories (`agent_id`), the agent itself with its "
        "blocks, tools and conversations.")
    scope_id: str | None = Field(default=None, min_length=1, max_length=255,
                                 description="The user's or agent's id (as memories carry it); not with "
                                             "`organization`.")
    include: list[Group] = Field(default_factory=lambda: list(ALL_GROUPS), min_length=1, max_length=6,
                                 description="Kinds of rows: memories (with their passages' vectors), history, "
                                             "blocks (with versions), agents, tools, conversations (with messages; "
                                             "their agents come along).")
    vectors: bool = Field(default=True, description="Include embeddings. Without them the archive is smaller and "
                                                    "an import embeds the memories again.")

    @model_validator(mode="after")
    def _scope_id_matches_scope(self) -> ExportIn:
        if (self.scope == "organization") != (self.scope_id is None):
            raise ValueError("scope_id is required for a user or agent scope, and refused for organization")
        self.include = list(dict.fromkeys(self.include))
        return self


class ExportOut(BaseModel):
    """An export: its job's state and, once it succeeded, its archive."""

    id: uuid.UUID = Field(description="The export's id, also its job's (`GET /api/v1/jobs/{id}/events`).")
    status: JobStatus
    progress: JobProgress
    error: JobError | None = None
    scope: str
    scope_id: str | None = None
    include: list[str]
    vectors: bool
    created_at: datetime
    finished_at: datetime | None = None
    size_bytes: int | None = Field(default=None, description="The archive's size (once written).")
    sha256: str | None = Field(default=None, description="The archive file's sha256.")
    manifest: dict[str, Any] | None = Field(default=None, description="Format version, source, counts and sha256 "
                                                                       "of each member, embedding model.")
    expires_at: datetime | None = Field(default=None, description="After this the archive is gone (410).")
    expired: bool = False
    download_url: str | None = None
