"""API models of workspace files (`/api/v1/files`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class FileOut(BaseModel):
    """A file of the organization's workspace."""

    path: str = Field(description="Relative to the workspace, `/` between folders.")
    bytes: int
    modified: datetime
    content_type: str = Field(description="The media type its name suggests (a download is served with it).")
