"""api/streaming.py: the Server-Sent Events frame format clients and Last-Event-ID depend on."""

from __future__ import annotations

import json

from api.streaming import sse_frame
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
