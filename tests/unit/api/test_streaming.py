"""api/streaming.py: the Server-Sent Events frame format clients and Last-Event-ID depend on, and the routes
declared streaming."""

from __future__ import annotations

import json

from api.streaming import is_streaming, sse_frame
from schemas.enums import EventType
from schemas.events import JobEvent


def test_sse_frame_puts_the_stream_id_in_the_id_line_and_the_event_in_data():
    event = JobEvent(id="1732250000000-3", type=EventType.PROGRESS, job_id="j", org_id="o",
                     data={"done": 1, "total": 2}, ts=1.5)
    frame = sse_frame(event)
    assert frame.endswith("\n\n")
    lines = frame.rstrip("\n").split("\n")
    assert lines[0] == "id: 1732250000000-3"
    assert lines[1] == "event: progress"
    assert lines[2].startswith("data: ")
    assert json.loads(lines[2][len("data: "):]) == event.model_dump(mode="json")
    assert len(lines) == 3


def test_sse_frame_of_an_event_without_stream_id_has_no_id_line():
    # A snapshot is not on the stream: an `id:` line would move the browser's Last-Event-ID.
    event = JobEvent(type=EventType.SNAPSHOT, job_id="j", org_id="o", ts=1.0)
    frame = sse_frame(event)
    assert not any(line.startswith("id:") for line in frame.split("\n"))
    assert frame.startswith("event: snapshot\n")


async def _collect(response) -> str:
    return "".join([chunk if isinstance(chunk, str) else chunk.decode() async for chunk in response.body_iterator])


async def test_an_unexpected_error_inside_a_stream_ends_it_with_an_error_event():
    from api.streaming import sse_response

    async def follower():
        yield JobEvent(type=EventType.SNAPSHOT, job_id="j", org_id="o", ts=1.0)
        yield None
        raise RuntimeError("a bug, with internals nobody outside should read")

    body = await _collect(await sse_response(follower()))
    frames = [f for f in body.split("\n\n") if f]
    assert frames[-1].startswith("event: error\ndata: ")
    error = json.loads(frames[-1].split("data: ", 1)[1])
    assert error["code"] == "internal_error" and "internals" not in error["message"]
    assert "event: snapshot" in body and ": heartbeat" in body


def test_a_last_event_id_past_64_bits_is_not_a_stream_id():
    from core.events import is_stream_id

    assert is_stream_id("18446744073709551615-18446744073709551615")
    assert not is_stream_id("18446744073709551616-0")
    assert not is_stream_id("0-18446744073709551616")


def test_exactly_the_event_stream_routes_are_declared_streaming():
    from api.app import create_app
    from tests.unit.test_architecture import app_routes

    routes = [r for r in app_routes(create_app().routes) if getattr(r, "methods", None)]
    documented = {r.path_format: r for r in routes
                  if "text/event-stream" in r.responses.get(200, {}).get("content", {})}
    # Only streams; a route that streams on request (JSON otherwise, as a chat completion) is not declared.
    event_streams = {path for path, r in documented.items() if r.response_model is None}
    assert event_streams == {"/api/v1/jobs/{job_id}/events", "/api/v1/events"}
    assert set(documented) - event_streams == {"/v1/chat/completions"}
    assert {r.path_format for r in routes if is_streaming(r)} == event_streams


async def _chunks_of(chunks) -> list[str]:
    from api.streaming import chunk_stream

    return [frame async for frame in chunk_stream(chunks)]


async def test_a_chunk_stream_sends_each_chunk_as_data_then_done():
    from schemas.openai_compat import ChatCompletionChunk, ChunkChoice, Delta

    async def chunks():
        yield ChatCompletionChunk(id="c", created=1, model="m", choices=[ChunkChoice(delta=Delta(content="hi"))])
        yield None

    frames = await _chunks_of(chunks())
    assert frames[0].startswith("data: {") and json.loads(frames[0][6:])["choices"][0]["delta"] == {"content": "hi"}
    assert frames[1:] == [": heartbeat\n\n", "data: [DONE]\n\n"]


async def test_a_chunk_stream_that_fails_ends_with_an_error_in_the_apis_shape_and_no_done():
    from core.errors import AppError

    async def chunks():
        yield None
        raise AppError("the turn failed", code="llm_rejected", details={"job_id": "j"})

    frames = await _chunks_of(chunks())
    error = json.loads(frames[-1].removeprefix("data: "))["error"]
    assert (error["code"], error["message"], error["details"]) == ("llm_rejected", "the turn failed", {"job_id": "j"})
    assert "data: [DONE]\n\n" not in frames

    async def buggy():
        raise RuntimeError("internals nobody outside should read")
        yield  # an async generator

    error = json.loads((await _chunks_of(buggy()))[-1].removeprefix("data: "))["error"]
    assert error["code"] == "internal_error" and "internals" not in error["message"]


def test_an_event_is_rendered_once_however_many_followers_send_it():
    event = JobEvent(id="5-0", type=EventType.PROGRESS, job_id="j", org_id="o", data={"done": 1}, ts=1.0)
    calls = []

    def render(e: JobEvent) -> str:
        calls.append(e.id)
        return sse_frame(e)

    frames = {event.rendered("probe", render) for _ in range(1000)}
    assert calls == ["5-0"] and frames == {sse_frame(event)}
    assert sse_frame(event) is sse_frame(event)
    # What the memo holds is no part of the event's data.
    assert "_frames" not in event.model_dump() and event.model_dump_json().count("probe") == 0
