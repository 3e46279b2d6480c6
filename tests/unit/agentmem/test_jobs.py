"""agentmem/jobs.py: following a job across dropped connections, against `httpx.MockTransport` serving the bytes
api/streaming.py writes. (Against the real stack, through a proxy that cuts connections:
tests/integration/test_sdk.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from agentmem import AgentMem, APIError, AsyncAgentMem, JobFailed
from api.streaming import sse_response
from schemas.enums import EventType
from schemas.events import JobEvent
from tests.unit.agentmem.test_transport import JOB

JOB_ID = JOB["id"]


def event(n: int, kind: EventType = EventType.PROGRESS, **data) -> JobEvent:
    return JobEvent(id=f"1732250000000-{n}", type=kind, job_id=JOB_ID, org_id="o", data=data or {"done": n, "total": 5},
                    ts=float(n))


def snapshot(status: str = "running") -> JobEvent:
    return JobEvent(type=EventType.SNAPSHOT, job_id=JOB_ID, org_id="o", data=JOB | {"status": status}, ts=0.0)


STREAM = [event(1), event(2), event(3), event(4), event(5, EventType.SUCCEEDED, result={"stored": 5})]


def server_body(*items: JobEvent) -> bytes:
    async def follower() -> AsyncIterator[JobEvent]:
        for item in items:
            yield item

    async def render() -> bytes:
        response = await sse_response(follower())
        return b"".join([chunk async for chunk in response.body_iterator])

    return asyncio.run(render())


class Dropped(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off after its bytes, as a connection cut mid-stream does."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def stream_server(bodies: list[tuple[bytes, bool]]):
    """Answers the job's GET and, in turn, each connection to its events: (bytes, dropped after them)."""
    connections: list[httpx.Request] = []
    reads: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):  # queued when first read, finished afterwards
            reads.append(request)
            return httpx.Response(200, json=JOB if len(reads) == 1 else JOB | {"status": "succeeded"})
        connections.append(request)
        body, dropped = bodies[len(connections) - 1]
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=Dropped(body) if dropped else httpx.ByteStream(body))

    return handler, connections


def resume_bodies() -> list[tuple[bytes, bool]]:
    # The first connection breaks after event 2; the second, asked for what follows 2, sends 3 and 4 and ends
    # early (a server restart); the third sends the rest. Each opens with a snapshot, as the API's do.
    return [(server_body(snapshot(), *STREAM[:2]), True), (server_body(snapshot(), *STREAM[2:4]), False),
            (server_body(snapshot(), STREAM[4]), False)]


def test_events_resume_after_the_last_event_id_and_yield_each_event_once():
    handler, connections = stream_server(resume_bodies())
    client = AgentMem("http://api.test", "k", http_client=httpx.Client(base_url="http://api.test",
                                                                       transport=httpx.MockTransport(handler)))
    client.transport.sleep = lambda seconds: None
    job = client.jobs.get(JOB_ID)
    seen = list(job.events())
    assert [e.type.value for e in seen] == ["snapshot", "progress", "progress", "progress", "progress", "succeeded"]
    assert [e.id for e in seen[1:]] == [e.id for e in STREAM]
    assert [c.headers.get("Last-Event-ID") for c in connections] == [None, STREAM[1].id, STREAM[3].id]
    assert job.status == "succeeded" and job.progress.done == 4


def test_wait_returns_the_job_read_afresh_and_raises_when_it_failed():
    handler, _ = stream_server([(server_body(snapshot(), *STREAM), False)])
    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler))
    job = AgentMem("http://api.test", "k", http_client=http).jobs.get(JOB_ID)
    assert job.status == "queued"
    assert job.wait(30).status == "succeeded" and job.result is None  # the row as read afresh

    failed = [snapshot(), event(1, EventType.FAILED, error={"code": "boom", "message": "it broke"})]

    def failing(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=httpx.ByteStream(server_body(*failed)))
        failed_row = {"status": "failed", "error": {"code": "boom", "message": "it broke"}}
        return httpx.Response(200, json=JOB | failed_row)

    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(failing))
    job = AgentMem("http://api.test", "k", http_client=http).jobs.get(JOB_ID)
    with pytest.raises(JobFailed) as raised:
        job.wait(30)
    assert raised.value.job.error.code == "boom"


def test_a_stream_that_keeps_breaking_gives_up_with_the_servers_error_event():
    broken = (b'retry: 2000\n\nevent: error\n'
              b'data: {"code": "redis_unavailable", "message": "down", "request_id": "r7"}\n\n')
    handler, connections = stream_server([(broken, False)] * 10)
    client = AgentMem("http://api.test", "k", max_retries=2,
                      http_client=httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler)))
    client.transport.sleep = lambda seconds: None
    with pytest.raises(APIError) as raised:
        list(client.jobs.events(JOB_ID))
    assert len(connections) == 3
    assert (raised.value.status_code, raised.value.code, raised.value.request_id) == (None, "redis_unavailable", "r7")


async def test_the_async_job_resumes_the_same_way():
    bodies = [(await _render(snapshot(), *STREAM[:2]), True), (await _render(snapshot(), *STREAM[2:]), False)]
    handler, connections = stream_server(bodies)

    async def no_sleep(seconds: float) -> None:
        return None

    http = httpx.AsyncClient(base_url="http://api.test", transport=httpx.MockTransport(handler))
    async with AsyncAgentMem("http://api.test", "k", http_client=http) as client:
        client.transport.sleep = no_sleep
        job = await client.jobs.get(JOB_ID)
        seen = [e async for e in job.events()]
        assert [e.id for e in seen if e.id] == [e.id for e in STREAM]
        assert [c.headers.get("Last-Event-ID") for c in connections] == [None, STREAM[1].id]
        assert (await job.wait()).status == "succeeded"


async def _render(*items: JobEvent) -> bytes:
    async def follower() -> AsyncIterator[JobEvent]:
        for item in items:
            yield item

    response = await sse_response(follower())
    return b"".join([chunk async for chunk in response.body_iterator])


def test_a_turn_stream_cut_mid_answer_goes_on_from_its_jobs_stream():
    tokens = [JobEvent(id=f"1732250000000-{n}", type=EventType.TOKEN, job_id=JOB_ID, org_id="o",
                       data={"step": 1, "text": text}, ts=float(n)) for n, text in enumerate(["Hel", "lo ", "Ada"], 1)]
    done = JobEvent(id="1732250000000-4", type=EventType.SUCCEEDED, job_id=JOB_ID, org_id="o",
                    data={"result": {"content": "Hello Ada"}}, ts=4.0)
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        headers = {"content-type": "text/event-stream"}
        if request.method == "POST":   # the turn's own stream, cut after two tokens
            body = server_body(snapshot("queued"), *tokens[:2])
            return httpx.Response(202, headers=headers | {"X-Job-Id": JOB_ID, "X-Message-Id": "m1"},
                                  stream=Dropped(body))
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(server_body(snapshot(), tokens[2], done)))

    client = AgentMem("http://api.test", "k", http_client=httpx.Client(base_url="http://api.test",
                                                                       transport=httpx.MockTransport(handler)))
    client.transport.sleep = lambda seconds: None
    stream = client.conversations.send("c1", "hi", stream=True)
    kinds = [e.type.value for e in stream]
    assert kinds == ["snapshot", "token", "token", "token", "succeeded"]
    assert stream.text == "Hello Ada" and stream.result == {"content": "Hello Ada"} and stream.job_id == JOB_ID
    post, follow = requests
    assert post.url.params["stream"] == "true" and post.headers["Idempotency-Key"]
    assert follow.url.path == f"/api/v1/jobs/{JOB_ID}/events" and follow.headers["Last-Event-ID"] == tokens[1].id
