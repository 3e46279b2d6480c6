"""agentmem/sse.py: the client parser reads what api/streaming.py writes, each event as soon as it is complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from agentmem.sse import aevents, events
from api.streaming import sse_response
from schemas.enums import EventType
from schemas.events import JobEvent

SNAPSHOT = JobEvent(type=EventType.SNAPSHOT, job_id="j", org_id="o", data={"status": "running"}, ts=1.0)
PROGRESS = JobEvent(id="1732250000000-3", type=EventType.PROGRESS, job_id="j", org_id="o",
                    data={"done": 1, "total": 2}, ts=2.0)
SUCCEEDED = JobEvent(id="1732250000000-4", type=EventType.SUCCEEDED, job_id="j", org_id="o", ts=3.0)


async def server_body(*items: JobEvent | None) -> bytes:
    """The bytes the API sends for a follower yielding `items` (None: a quiet interval, a heartbeat)."""

    async def follower() -> AsyncIterator[JobEvent | None]:
        for item in items:
            yield item

    response = await sse_response(follower())
    return b"".join([chunk async for chunk in response.body_iterator])


def event_stream(stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, stream=stream)


async def test_events_are_the_servers_frames_without_the_retry_advice_and_heartbeats():
    body = await server_body(SNAPSHOT, None, PROGRESS, None, SUCCEEDED)
    parsed = list(events(event_stream(httpx.ByteStream(body))))
    assert [e.event for e in parsed] == ["snapshot", "progress", "succeeded"]
    assert [e.json() for e in parsed] == [e.model_dump(mode="json") for e in (SNAPSHOT, PROGRESS, SUCCEEDED)]
    # The id to resume from: none before the first `id:` line, then the latest one.
    assert [e.id for e in parsed] == ["", PROGRESS.id, SUCCEEDED.id]


async def test_an_event_without_its_own_id_keeps_the_position_to_resume_from():
    body = await server_body(SNAPSHOT, PROGRESS) + b'event: error\ndata: {"code": "x"}\n\n'
    parsed = list(events(event_stream(httpx.ByteStream(body))))
    assert [(e.event, e.id) for e in parsed] == [("snapshot", ""), ("progress", PROGRESS.id), ("error", PROGRESS.id)]


async def test_each_event_is_yielded_as_soon_as_its_blank_line_arrives():
    body = await server_body(SNAPSHOT, PROGRESS)
    release = asyncio.Event()

    class Trickle(httpx.AsyncByteStream):
        """The body byte by byte, then a stream that stays open until the test has seen the events."""

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(len(body)):
                yield body[i:i + 1]
            await release.wait()

    async def first_two() -> list[str]:
        seen = []
        async for event in aevents(event_stream(Trickle())):
            seen.append(event.event)
            if len(seen) == 2:
                return seen
        return seen

    try:  # a parser that waited for more bytes (or the end) would time out here
        assert await asyncio.wait_for(first_two(), 5) == ["snapshot", "progress"]
    finally:
        release.set()
