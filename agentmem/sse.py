"""Reading the API's event streams as a client: the one SSE parser of the SDK (and so the CLI), the tests and
the benchmarks.

httpx-sse does the parsing, line by line as the bytes arrive, so an event is yielded as soon as the blank
line ending it is read (the latency benchmark's clock relies on that). An event's `id` is the stream's last
event id so far, as the SSE spec keeps it: the value to send as `Last-Event-ID` to resume after it. An event
without an `id:` line repeats the id before it, or has "" when none came yet (the opening snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
from httpx_sse import EventSource, ServerSentEvent


def events(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """The events of an open `text/event-stream` response, in order; a frame without data (the server's
    opening `retry:` advice) is not an event, as in a browser's EventSource."""
    for event in EventSource(response).iter_sse():
        if event.data:
            yield event


async def aevents(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """`events` for a response of an `httpx.AsyncClient`."""
    async for event in EventSource(response).aiter_sse():
        if event.data:
            yield event
