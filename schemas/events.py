"""Job events as they travel on Redis streams, SSE and WebSocket."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from schemas.enums import EventType


class JobEvent(BaseModel):
    id: str | None = Field(default=None, description="Redis stream entry id; the SSE `id:` and the resume point.")
    type: EventType
    job_id: str
    org_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(description="Unix time the event was published.")
