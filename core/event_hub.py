"""One Redis reader per event stream per process, shared by every follower of that stream.

A follower joins at a position (the id of the last event it has, or the stream's newest). The stream's
reader blocks on XREAD and hands each new event, parsed once (and so rendered once: the transports memoize
their frames on the event object), to every follower's buffer. With no new event for `sse_heartbeat_seconds`,
it hands each follower a `None` (a heartbeat).

Buffers are bounded (`stream_follower_buffer` events). A follower that falls that far behind (its client
is not reading) is detached: the reader adds nothing more to its buffer. When its client reads again, it gets
what its buffer holds, then catches up by reading Redis itself from the last of those (XRANGE pages, no
blocking), then rejoins the reader. Memory stays bounded,
its client still gets every event in order (as far as the stream's MAXLEN keeps them, as for a reconnect
with Last-Event-ID), and the other followers never wait for it. A follower that joins behind the reader
(a resume from an older Last-Event-ID) reads its backlog the same way first. The reader stops when its
last follower leaves, and fails every follower with its error when Redis does.

With `event_hub` off, each follower blocks on XREAD itself (the path before the hub; kept for benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from core import events
from core.metrics import EVENT_FOLLOWER_DETACHMENTS, EVENT_HUB_FOLLOWERS, EVENT_HUB_READERS
from core.settings import get_settings
from schemas.events import JobEvent

PAGE = 100


def position_of(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


class Follower:
    """One follower of one stream: its buffer while it rides the shared reader, its position always."""

    def __init__(self, hub: Hub, key: str, position: str) -> None:
        self.hub, self.key = hub, key
        self.position = position  # id of the last event handed out (or the start: nothing at or before it)
        self.buffer: deque[JobEvent | None] = deque()
        self.reader: Reader | None = None  # None: not riding a reader (behind it, or detached)
        self.skip_until: tuple[int, int] | None = None  # joined ahead of the reader: ignore what it already had
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None

    def push(self, event: JobEvent | None, at: tuple[int, int] | None) -> None:
        """Take one event (or heartbeat) from the reader; synchronous, so every follower sees the same order."""
        if self.skip_until is not None and at is not None:
            if at <= self.skip_until:
                return
            self.skip_until = None
        if len(self.buffer) >= self.hub.buffer_limit:
            # Not keeping up: take no more. What it holds it still gets; the rest it reads from Redis after that.
            EVENT_FOLLOWER_DETACHMENTS.inc()
            self.reader.leave(self)
        else:
            self.buffer.append(event)
        self.wake()

    def fail(self, error: BaseException) -> None:
        self.error, self.reader = error, None
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def events(self) -> AsyncIterator[JobEvent | None]:
        """The events after the start position, in order, with `None` for heartbeats; never ends by itself."""
        EVENT_HUB_FOLLOWERS.inc()
        try:
            self.hub.attach(self)  # at once when level with or ahead of the reader; else catch up below
            while True:
                if self.buffer:
                    event = self.buffer.popleft()
                    if event is not None:
                        self.position = event.id
                    yield event
                elif self.error is not None:
                    raise self.error
                elif self.reader is None:
                    # Behind the reader (joined from an older id, or detached for not keeping up): read our own
                    # way back to it.
                    for event in await self.catch_up():
                        self.position = event.id
                        yield event
                else:
                    self.waiter = asyncio.get_running_loop().create_future()
                    try:
                        await self.waiter
                    finally:
                        self.waiter = None
        finally:
            EVENT_HUB_FOLLOWERS.dec()
            if self.reader is not None:
                self.reader.leave(self)

    async def catch_up(self) -> list[JobEvent]:
        """A page of the events between our position and the reader's, read from Redis by this follower alone;
        empty once there is nothing between, and then we ride the reader."""
        while not self.hub.attach(self):
            reader = self.hub.readers[self.key]
            entries = await events.read_range(self.key, after=self.position, upto=reader.position, count=PAGE)
            if entries:
                return entries
            reader = self.hub.readers.get(self.key)
            if reader is not None:
                # Nothing left between us (trimmed away while we read): ride it from where it is.
                reader.attach(self)
                return []
        return []


class Reader:
    """The one XREAD loop of a stream key in this process."""

    def __init__(self, hub: Hub, key: str, position: str) -> None:
        self.hub, self.key, self.position = hub, key, position
        self.followers: list[Follower] = []
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"event reader {key}")
        EVENT_HUB_READERS.inc()

    def attach(self, follower: Follower) -> None:
        follower.reader = self
        at, mine = position_of(follower.position), position_of(self.position)
        follower.skip_until = at if at > mine else None
        self.followers.append(follower)

    def leave(self, follower: Follower) -> None:
        follower.reader = None
        with contextlib.suppress(ValueError):
            self.followers.remove(follower)
        if not self.followers:
            self.stop()

    def stop(self) -> None:
        if self.hub.readers.get(self.key) is self:
            del self.hub.readers[self.key]
            EVENT_HUB_READERS.dec()
        self.task.cancel()

    async def run(self) -> None:
        block_ms = int(get_settings().sse_heartbeat_seconds * 1000)
        try:
            while self.followers:
                batch = await events.read({self.key: self.position}, block_ms=block_ms, count=PAGE)
                if not batch:
                    for follower in list(self.followers):
                        follower.push(None, None)
                    continue
                for _, event in batch:
                    at = position_of(event.id)
                    self.position = event.id
                    for follower in list(self.followers):
                        follower.push(event, at)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            followers, self.followers = self.followers, []
            self.stop()
            for follower in followers:
                follower.fail(exc)


class Hub:
    """This process's readers, by stream key (one hub per event loop)."""

    def __init__(self) -> None:
        self.readers: dict[str, Reader] = {}
        self.buffer_limit = get_settings().stream_follower_buffer

    def attach(self, follower: Follower) -> bool:
        """Put the follower on its stream's reader if it is not behind it (starting one at its position if
        there is none); False when it has events to read first."""
        reader = self.readers.get(follower.key)
        if reader is None:
            self.readers[follower.key] = reader = Reader(self, follower.key, follower.position)
        elif position_of(follower.position) < position_of(reader.position):
            return False
        reader.attach(follower)
        return True

    def close(self) -> None:
        for reader in list(self.readers.values()):
            reader.stop()


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for other in [other for other in _hubs if other.is_closed()]:
            del _hubs[other]
        hub = _hubs[loop] = Hub()
    return hub


def close_hub() -> None:
    """Stop the running loop's readers (lifespan shutdown)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        hub.close()


def follow(key: str, position: str) -> AsyncIterator[JobEvent | None]:
    """Events of `key` after `position` in order, `None` for each heartbeat interval without one; forever.
    Close it (`contextlib.aclosing`) to leave the stream at once."""
    if not get_settings().event_hub:
        return _follow_alone(key, position)
    return Follower(get_hub(), key, position).events()


async def _follow_alone(key: str, position: str) -> AsyncIterator[JobEvent | None]:
    block_ms = int(get_settings().sse_heartbeat_seconds * 1000)
    while True:
        batch = await events.read({key: position}, block_ms=block_ms)
        if not batch:
            yield None
            continue
        for _, event in batch:
            position = event.id or position
            yield event
