"""Progress streaming: SSE with resume, the organization stream, WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid

import websockets

from core.events import job_stream, org_stream, publish
from core.redis import get_redis
from schemas.enums import EventType
from tests.support.sse import TERMINAL, follow, read_sse, sse_stream


def slow_items(n: int, seconds: float = 0.3) -> list[dict]:
    return [{"content": f"streamed item {i} @@slow:{seconds}@@"} for i in range(n)]


async def start(client, scope, n=40, seconds=0.3):
    response = await client.post("/api/v1/memories", json={"items": slow_items(n, seconds), "user_id": scope})
    assert response.status_code == 202
    return response.json()["id"]


async def test_sse_resume_with_last_event_id_loses_and_repeats_nothing(client, scope):
    job_id = await start(client, scope)
    # From the stream's start: on a busy machine the job can be running before a "now" follow connects.
    first = await follow(client, job_id, last_event_id="0-0",
                         stop_after=lambda e: e.event == "progress" and e.data["data"]["done"] >= 16)
    resume_from = [e for e in first if e.id][-1].id
    second = await follow(client, job_id, last_event_id=resume_from)
    assert second[0].event == "snapshot" and second[0].id is None
    assert second[-1].event == "succeeded"

    stored = await get_redis().xrange(job_stream(job_id))
    all_ids = [entry_id for entry_id, _ in stored]
    received = [e.id for e in first if e.id] + [e.id for e in second if e.id]
    # Every event arrives exactly once and in order across the reconnect.
    assert received == all_ids
    assert len(received) >= 6


async def test_sse_of_a_finished_job_sends_snapshot_and_terminal_event_then_ends(client, scope):
    job_id = await start(client, scope, n=2, seconds=0)
    await follow(client, job_id)
    events = await follow(client, job_id, timeout=10)
    assert [e.event for e in events] == ["snapshot", "succeeded"]
    assert events[0].data["data"]["status"] == "succeeded" and events[1].id


async def test_sse_rejects_a_malformed_last_event_id_and_unknown_jobs(client):
    response = await client.get(f"/api/v1/jobs/{uuid.uuid4()}/events")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    async with client.stream("GET", f"/api/v1/jobs/{uuid.uuid4()}/events",
                             headers={"Last-Event-ID": "yesterday"}) as bad:
        await bad.aread()
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_last_event_id"


async def test_sse_sends_heartbeats_while_a_job_is_quiet(client, scope):
    job_id = await start(client, scope, n=8, seconds=2.5)  # one chunk: quiet for 2.5 s; heartbeats every 1 s
    lines = []

    async def read():
        async with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith("event:") and line[6:].strip() in TERMINAL:
                    return

    await asyncio.wait_for(read(), 30)
    assert any(line.startswith(": heartbeat") for line in lines)


async def test_organization_stream_carries_every_job_event(client, scope):
    seen: list = []
    ready = asyncio.Event()

    async def listen():
        async for event in sse_stream(client, "/api/v1/events"):
            seen.append(event)
            if event.event in TERMINAL and event.data["job_id"] in jobs:
                done.add(event.data["job_id"])
                if done == set(jobs):
                    return

    jobs: list[str] = []
    done: set[str] = set()
    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.5)  # let the listener connect before the jobs start
    ready.set()
    jobs.extend([await start(client, scope, n=2, seconds=0), await start(client, scope, n=2, seconds=0)])
    await asyncio.wait_for(listener, 60)
    kinds = {(e.data["job_id"], e.event) for e in seen}
    for job_id in jobs:
        assert {(job_id, "queued"), (job_id, "started"), (job_id, "succeeded")} <= kinds


async def test_websocket_follows_two_jobs_on_one_socket(client, stack, scope, main_tenant):
    # Several chunks each: progress events come after the socket has subscribed.
    job_a, job_b = await start(client, scope, n=32, seconds=0.3), await start(client, scope, n=24, seconds=0.3)
    url = stack.api_url.replace("http://", "ws://") + "/api/v1/ws"
    terminal: dict[str, str] = {}
    events: dict[str, list[str]] = {job_a: [], job_b: []}
    async with websockets.connect(url, additional_headers=main_tenant.headers()) as ws:
        await ws.send(json.dumps({"action": "ping"}))
        await ws.send(json.dumps({"action": "subscribe", "job_id": job_a}))
        await ws.send(json.dumps({"action": "subscribe", "job_id": job_b}))
        await ws.send(json.dumps({"action": "subscribe", "job_id": str(uuid.uuid4())}))
        await ws.send("not json")
        replies = []

        async def read():
            while len(terminal) < 2:
                message = json.loads(await ws.recv())
                replies.append(message)
                if message["type"] == "event":
                    event = message["event"]
                    events[event["job_id"]].append(event["type"])
                    if event["type"] in TERMINAL:
                        terminal[event["job_id"]] = event["type"]

        await asyncio.wait_for(read(), 60)
    types = [r["type"] for r in replies]
    assert "pong" in types
    errors = {r["code"] for r in replies if r["type"] == "error"}
    assert errors == {"not_found", "malformed_message"}
    assert terminal == {job_a: "succeeded", job_b: "succeeded"}
    for job_id in (job_a, job_b):
        assert events[job_id][0] == "snapshot" and "progress" in events[job_id]


async def test_websocket_unsubscribe_stops_events_for_that_job(client, stack, scope, main_tenant):
    job_id = await start(client, scope, n=24, seconds=0.3)
    url = stack.api_url.replace("http://", "ws://") + "/api/v1/ws"
    async with websockets.connect(url, additional_headers=main_tenant.headers()) as ws:
        await ws.send(json.dumps({"action": "subscribe", "job_id": job_id}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "event" and message["event"]["type"] == "progress":
                break
        await ws.send(json.dumps({"action": "unsubscribe", "job_id": job_id}))
        after = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            after.append(message)
            if message["type"] == "unsubscribed":
                break
        assert message["reason"] == "requested"
        await follow(client, job_id)  # the job finishes meanwhile
        await ws.send(json.dumps({"action": "ping"}))
        leftover = [json.loads(await asyncio.wait_for(ws.recv(), 10))]
        while leftover[-1]["type"] != "pong":
            leftover.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert all(m["type"] == "pong" for m in leftover), leftover


def metric(text: str, sample: str) -> float:
    """A sample's value in a /metrics answer (0 when absent), e.g. `agentmem_open_streams{transport="sse"}`."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def hub_figures(client) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {"readers": metric(text, "agentmem_event_hub_readers"),
            "followers": metric(text, "agentmem_event_hub_followers"),
            "sse": metric(text, 'agentmem_open_streams{transport="sse"}'),
            "websocket": metric(text, 'agentmem_open_streams{transport="websocket"}')}


async def blocked_xreads() -> int:
    """Redis connections blocked in XREAD right now (the API's stream readers; this process makes none)."""
    return sum(1 for c in await get_redis().client_list() if c["cmd"] == "xread" and "b" in c["flags"])


async def eventually(condition, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "not reached before the deadline"
        await asyncio.sleep(0.05)


async def test_many_sse_followers_of_one_stream_share_one_redis_reader_and_each_gets_every_event(
        owner, tenant):
    before, blocked_before = await hub_figures(owner), await blocked_xreads()
    key = org_stream(tenant.org_id)
    opened = 0
    received: list[list[str]] = [[] for _ in range(20)]

    async def listen(i: int) -> None:
        nonlocal opened
        async with owner.stream("GET", "/api/v1/events") as response:
            assert response.status_code == 200
            opened += 1
            async for event in read_sse(response):
                received[i].append(event.id)
                if len(received[i]) == 10:
                    return

    listeners = [asyncio.create_task(listen(i)) for i in range(20)]
    try:
        async def all_following():
            figures = await hub_figures(owner)
            return opened == 20 and figures["followers"] >= before["followers"] + 20 and figures["readers"] >= 1

        await eventually(all_following)
        figures = await hub_figures(owner)
        assert figures["sse"] >= before["sse"] + 20
        # Twenty followers of one stream, one reader: one more blocked XREAD at most, not twenty.
        assert await blocked_xreads() <= blocked_before + 1
        published = [await publish(EventType.PROGRESS, job_id=uuid.uuid4(), org_id=tenant.org_id,
                                   data={"done": i}) for i in range(10)]
        await asyncio.wait_for(asyncio.gather(*listeners), 30)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    assert len(published) == 10
    stored = [entry_id for entry_id, _ in await get_redis().xrange(key)]
    assert all(ids == stored for ids in received)
    # Gone with its last follower: the reader stops, and its blocked XREAD with it.
    async def reader_gone():
        return await blocked_xreads() <= blocked_before

    await eventually(reader_gone)


async def test_websocket_and_sse_followers_of_one_job_share_the_hub_reader(client, stack, scope, main_tenant):
    job_id = await start(client, scope, n=40, seconds=1.5)  # five quiet chunks: both join while it runs
    before, blocked_before = await hub_figures(client), await blocked_xreads()
    url = stack.api_url.replace("http://", "ws://") + "/api/v1/ws"
    sse_ids: list[str] = []

    async def follow_sse() -> None:
        async for event in sse_stream(client, f"/api/v1/jobs/{job_id}/events", {"Last-Event-ID": "0-0"}):
            if event.event != "snapshot":
                sse_ids.append(event.id)
            if event.event in TERMINAL:
                return

    sse = asyncio.create_task(follow_sse())
    ws_ids: list[str] = []
    async with websockets.connect(url, additional_headers=main_tenant.headers()) as ws:
        await ws.send(json.dumps({"action": "subscribe", "job_id": job_id, "last_event_id": "0-0"}))

        async def both_following():
            figures = await hub_figures(client)
            return figures["followers"] >= before["followers"] + 2 and figures["websocket"] >= 1

        await eventually(both_following)
        assert await blocked_xreads() <= blocked_before + 1  # one reader for the socket and the SSE response
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if message["type"] == "event" and message["event"]["type"] != "snapshot":
                ws_ids.append(message["event"]["id"])
                if message["event"]["type"] in TERMINAL:
                    break
    await asyncio.wait_for(sse, 60)
    stored = [entry_id for entry_id, _ in await get_redis().xrange(job_stream(job_id))]
    assert ws_ids == sse_ids == stored


async def test_websocket_refuses_an_unknown_job_before_subscribing_and_never_echoes_a_missing_id(
        client, stack, main_tenant):
    url = stack.api_url.replace("http://", "ws://") + "/api/v1/ws"
    unknown = str(uuid.uuid4())
    async with websockets.connect(url, additional_headers=main_tenant.headers()) as ws:
        await ws.send(json.dumps({"action": "subscribe", "job_id": unknown}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (first["type"], first["code"], first["job_id"]) == ("error", "not_found", unknown)
        await ws.send(json.dumps({"action": "subscribe"}))
        missing = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (missing["type"], missing["code"], missing["job_id"]) == ("error", "invalid_input", None)
        assert missing["details"]["errors"][0]["loc"] == ["job_id"]
        await ws.send(json.dumps({"action": "subscribe", "job_id": 42}))
        number = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (number["code"], number["job_id"]) == ("invalid_input", None)
        await ws.send(json.dumps({"action": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "pong"}  # nothing else was sent
