"""Rendering event followers as Server-Sent Events (job events, and OpenAI-style chunks), and declaring the
routes that stream."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from core.errors import AppError, infrastructure_errors
from core.logging import request_id_var
from core.metrics import OPEN_STREAMS
from schemas.events import JobEvent

log = logging.getLogger(__name__)
SSE_STREAMS = OPEN_STREAMS.labels("sse")


def streams(endpoint):
    """Declare a route whose response stays open as long as its client follows it (Server-Sent Events):
    its duration is no latency, so the request metrics leave it out. Put it under the `@router` decorator."""
    endpoint.__streams__ = True
    return endpoint


def is_streaming(route) -> bool:
    """Whether the matched route (`scope["route"]`, None when nothing matched) is declared with `streams`."""
    return getattr(getattr(route, "endpoint", None), "__streams__", False)


def sse_frame(event: JobEvent) -> str:
    """One SSE message; the stream entry id becomes `id:` so Last-Event-ID resumes after it. Rendered once per
    event, however many followers it goes to."""
    return event.rendered("sse", _render_sse)


def _render_sse(event: JobEvent) -> str:
    lines = [f"id: {event.id}"] if event.id else []
    lines += [f"event: {event.type.value}", "data: " + json.dumps(event.model_dump(mode="json"), separators=(",", ":"))]
    return "\n".join(lines) + "\n\n"


def sse_bytes(event: JobEvent) -> bytes:
    """`sse_frame` encoded, once per event: Starlette would encode a str again for every follower."""
    return event.rendered("sse-bytes", _encoded_sse_frame)


def _encoded_sse_frame(event: JobEvent) -> bytes:
    return sse_frame(event).encode()


RETRY = b"retry: 2000\n\n"
HEARTBEAT = b": heartbeat\n\n"


def error_frame(code: str, message: str) -> str:
    """The last frame of a stream that can't go on: an `error` event with request id (the status is gone)."""
    data = {"code": code, "message": message, "request_id": request_id_var.get()}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


async def sse_response(follower: AsyncIterator[JobEvent | None]) -> StreamingResponse:
    """Start the follower before answering (so 404/503 are real statuses), then stream it."""
    first = await anext(follower)

    async def body() -> AsyncIterator[bytes]:
        SSE_STREAMS.inc()
        try:
            yield RETRY
            if first is not None:
                yield sse_bytes(first)
            async for event in follower:
                yield HEARTBEAT if event is None else sse_bytes(event)
        except (AppError, *infrastructure_errors()) as exc:
            # The status line is gone: say what happened as an event, then close.
            log.warning("event stream ended by error: %s", exc)
            code = getattr(exc, "code", "upstream_unavailable")
            yield error_frame(code, str(exc)).encode()
        except Exception:
            # A bug, not the client's doing: still an `error` event and a clean end, never a cut stream.
            log.exception("event stream failed")
            yield error_frame("internal_error",
                              "the event stream failed; reconnect with Last-Event-ID to resume").encode()
        finally:
            SSE_STREAMS.dec()
            await follower.aclose()  # leave the event hub now, not when the garbage collector gets to it

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def data_frame(payload: str) -> str:
    """A nameless SSE message, as OpenAI-style streams send each chunk (and `[DONE]`)."""
    return f"data: {payload}\n\n"


async def chunk_stream(chunks: AsyncIterator[BaseModel | None]) -> AsyncIterator[str]:
    """An OpenAI-style stream: `data: <chunk>` for each chunk, then `data: [DONE]`. A stream that can't go on
    ends with `data: {"error": …}` in the API's error shape (OpenAI clients raise it) and no `[DONE]`."""
    try:
        async for chunk in chunks:
            yield ": heartbeat\n\n" if chunk is None else data_frame(chunk.model_dump_json())
    except (AppError, *infrastructure_errors()) as exc:
        log.warning("chunk stream ended by error: %s", exc)
        error = {"code": getattr(exc, "code", "upstream_unavailable"), "message": str(exc),
                 "details": getattr(exc, "details", None) or {}, "request_id": request_id_var.get()}
        yield data_frame(json.dumps({"error": error}))
        return
    except Exception:
        log.exception("chunk stream failed")
        yield data_frame(json.dumps({"error": {"code": "internal_error", "message": "the stream failed",
                                               "details": {}, "request_id": request_id_var.get()}}))
        return
    yield data_frame("[DONE]")
