"""core/event_hub.py against the real Redis: shared readers, backlogs, slow followers, errors."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing

import pytest
from redis.exceptions import ResponseError

from core import events
from core.event_hub import Follower, Hub
from core.metrics import REGISTRY
from core.redis import get_redis
from schemas.enums import EventType


@pytest.fixture
def stream():
    """A fresh job stream: (job id, org id, key)."""
    job_id, org_id = uuid.uuid4(), uuid.uuid4()
    return job_id, org_id, events.job_stream(job_id)


@pytest.fixture
async def hub():
    hub = Hub()
    yield hub
    hub.close()


def detachments() -> float:
    return REGISTRY.get_sample_value("agentmem_event_follower_detachments_total") or 0.0


async def publish(stream, n: int) -> list[str]:
    job_id, org_id, _ = stream
    return [await events.publish(EventType.PROGRESS, job_id=job_id, org_id=org_id, data={"done": i}, to_org=False)
            for i in range(n)]


async def take(follower_events, n: int, timeout: float = 20) -> list[str]:
    """The ids of the next `n` events (heartbeats skipped)."""
    got: list[str] = []

    async def collect():
        while len(got) < n:
            event = await anext(follower_events)
            if event is not None:
                got.append(event.id)

    await asyncio.wait_for(collect(), timeout)
    return got


async def wait_until(condition, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_many_followers_of_one_stream_share_one_reader_and_each_gets_every_event_in_order(hub, stream):
    start = await events.last_id(stream[2])
    followers = [Follower(hub, stream[2], start) for _ in range(50)]
    iterators = [f.events() for f in followers]
    pulls = [asyncio.ensure_future(anext(it)) for it in iterators]  # each joins on its first pull
    await wait_until(lambda: all(f.reader is not None for f in followers))
    assert list(hub.readers) == [stream[2]] and len(hub.readers[stream[2]].followers) == 50

    published = await publish(stream, 30)
    for pull, iterator in zip(pulls, iterators, strict=True):
        first = (await asyncio.wait_for(pull, 20)).id
        assert [first, *await take(iterator, 29)] == published
    for iterator in iterators:
        await iterator.aclose()
    assert hub.readers == {}


async def test_a_follower_joining_behind_the_reader_gets_its_backlog_in_pages_then_live_events(hub, stream):
    ahead = Follower(hub, stream[2], await events.last_id(stream[2])).events()
    early = asyncio.ensure_future(anext(ahead))
    await wait_until(lambda: stream[2] in hub.readers)
    backlog = await publish(stream, 250)  # more than a page (100)
    assert (await asyncio.wait_for(early, 20)).id == backlog[0]
    assert await take(ahead, 249) == backlog[1:]

    late = Follower(hub, stream[2], backlog[9])  # as with Last-Event-ID: resume after the 10th event
    async with aclosing(ahead), aclosing(late.events()) as late_events:
        assert await take(late_events, 240) == backlog[10:]
        # Caught up, it rides the shared reader as it waits for more: still one reader for the stream.
        waiting = asyncio.ensure_future(anext(late_events))
        await wait_until(lambda: late.reader is not None)
        assert late.reader is hub.readers[stream[2]] and len(hub.readers) == 1
        live = await publish(stream, 5)
        assert [(await asyncio.wait_for(waiting, 20)).id, *await take(late_events, 4)] == live
        assert await take(ahead, 5) == live


async def test_a_follower_that_does_not_read_is_let_go_at_its_buffer_limit_and_catches_up_in_order(
        hub, stream):
    hub.buffer_limit = 5
    start = await events.last_id(stream[2])
    slow, fast = Follower(hub, stream[2], start), Follower(hub, stream[2], start)
    slow_events, fast_events = slow.events(), fast.events()
    first_pull = asyncio.ensure_future(anext(slow_events))
    fast_pull = asyncio.ensure_future(anext(fast_events))
    await wait_until(lambda: slow.reader is not None and fast.reader is not None)
    detached_before = detachments()

    published = await publish(stream, 1)
    assert (await asyncio.wait_for(first_pull, 20)).id == published[0]
    assert (await asyncio.wait_for(fast_pull, 20)).id == published[0]
    # The slow follower now reads nothing while 200 more events go by; the fast one keeps reading.
    fast_reads = asyncio.ensure_future(take(fast_events, 200))
    more = await publish(stream, 200)
    assert await fast_reads == more  # the others never wait for it
    assert len(slow.buffer) == 5 and slow.reader is None  # detached: nothing more is held for it
    assert detachments() == detached_before + 1
    assert len(hub.readers[stream[2]].followers) == 1

    # When it reads again it gets every event it missed, in order, from Redis, then rides the reader again.
    assert await take(slow_events, 200) == more
    waiting = asyncio.ensure_future(anext(slow_events))
    await wait_until(lambda: slow.reader is not None)
    assert len(hub.readers[stream[2]].followers) == 2
    live = await publish(stream, 3)
    assert [(await asyncio.wait_for(waiting, 20)).id, *await take(slow_events, 2)] == live
    assert await take(fast_events, 3) == live
    await slow_events.aclose()
    await fast_events.aclose()


async def test_the_reader_stops_when_the_last_follower_leaves(hub, stream):
    start = await events.last_id(stream[2])
    one, two = Follower(hub, stream[2], start).events(), Follower(hub, stream[2], start).events()
    pulls = [asyncio.ensure_future(anext(one)), asyncio.ensure_future(anext(two))]
    await wait_until(lambda: len(getattr(hub.readers.get(stream[2]), "followers", [])) == 2)
    reader = hub.readers[stream[2]]
    pulls[0].cancel()  # a client going away: its task is cancelled while it waits
    await asyncio.gather(pulls[0], return_exceptions=True)
    await one.aclose()
    assert hub.readers.get(stream[2]) is reader and len(reader.followers) == 1 and not reader.task.done()
    pulls[1].cancel()
    await asyncio.gather(pulls[1], return_exceptions=True)
    await two.aclose()
    assert stream[2] not in hub.readers
    await asyncio.wait_for(asyncio.gather(reader.task, return_exceptions=True), 10)
    assert reader.task.cancelled()


async def test_a_redis_error_ends_every_follower_of_the_stream_with_it(hub, stream):
    await get_redis().set(stream[2], "not a stream")  # XREAD on it fails: WRONGTYPE
    try:
        followers = [Follower(hub, stream[2], "0-0").events() for _ in range(3)]
        for follower in followers:
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await asyncio.wait_for(anext(follower), 20)
        assert hub.readers == {}
    finally:
        await get_redis().delete(stream[2])
