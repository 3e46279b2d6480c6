"""Job events as they travel on Redis streams, SSE and WebSocket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, Field, PrivateAttr

from schemas.enums import EventType

T = TypeVar("T", str, bytes)


class JobEvent(BaseModel):
    id: str | None = Field(default=None, description="Redis stream entry id; the SSE `id:` and the resume point.")
    type: EventType
    job_id: str
    org_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(description="Unix time the event was published.")
    _frames: dict[str, str | bytes] = PrivateAttr(default_factory=dict)

    def rendered(self, transport: str, render: Callable[[JobEvent], T]) -> T:
        """`render(self)`, computed once per event object and transport: an event hub hands the same object
        to every follower of a stream."""
        # The private dict itself: `self._frames` goes through pydantic's __getattr__, which costs more than the
        # lookup, once per follower.
        frames = self.__pydantic_private__["_frames"]
        frame = frames.get(transport)
        if frame is None:
            frame = frames[transport] = render(self)
        return frame
