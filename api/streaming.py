"""Rendering event followers as Server-Sent Events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from core.errors import AppError, infrastructure_errors
from schemas.events import JobEvent

log = logging.getLogger(__name__)


def sse_frame(event: JobEvent) -> str:
    """One SSE message; the stream entry id becomes `id:` so Last-Event-ID resumes after it."""
    lines = [f"id: {event.id}"] if event.id else []
    lines += [f"event: {event.type.value}", "data: " + json.dumps(event.model_dump(mode="json"), separators=(",", ":"))]
    return "\n".join(lines) + "\n\n"


async def sse_response(follower: AsyncIterator[JobEvent | None]) -> StreamingResponse:
    """Start the follower before answering (so 404/503 are real statuses), then stream it."""
    first = await anext(follower)

    async def body() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        if first is not None:
            yield sse_frame(first)
        try:
            async for event in follower:
                yield ": heartbeat\n\n" if event is None else sse_frame(event)
        except (AppError, *infrastructure_errors()) as exc:
            # The status line is gone: say what happened as an event, then close.
            log.warning("event stream ended by error: %s", exc)
            code = getattr(exc, "code", "upstream_unavailable")
            yield f"event: error\ndata: {json.dumps({'code': code, 'message': str(exc)})}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
