"""Jobs as the SDK hands them out: their state, `.wait()`, `.events()` that survive a dropped connection, `.cancel()`;
and an agent turn's stream (`TurnStream`), which falls back to its job's stream when the connection drops.

A follow keeps the id of the last event it read and reconnects with `Last-Event-ID`, so no event is lost or
repeated. Each connection opens with a `snapshot` of the job row: the first is yielded, a reconnection's only
refreshes the job's state (it repeats the state, it is not an event of the stream).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from agentmem.errors import APIConnectionError, APIError, JobFailed, JobTimeout
from agentmem.sse import aevents, events as sse_events
from agentmem.transport import AsyncTransport, Call, SyncTransport
from schemas.conversations import ConversationOut
from schemas.enums import EventType
from schemas.events import JobEvent
from schemas.jobs import JobOut

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Longer than the API's heartbeat interval (AGENTMEM_SSE_HEARTBEAT_SECONDS, 15 s by default): a silent connection
# this long is a dead one.
STREAM_READ_SECONDS = 60.0


class _StreamBroke(Exception):
    """The server ended a stream with an `error` event: reconnect (it says so), up to the retry budget."""

    def __init__(self, error: APIError) -> None:
        super().__init__(str(error))
        self.error = error


class Follow:
    """Where a follow of one job's stream stands, across connections."""

    def __init__(self, last_event_id: str | None, *, max_failures: int, deadline: float | None,
                 snapshot: bool = True, endless: bool = False) -> None:
        self.last_id, self.max_failures, self.deadline, self.endless = last_event_id, max_failures, deadline, endless
        self.want_snapshot, self.done, self.failures, self.connections = snapshot, False, 0, 0

    def headers(self) -> dict[str, str]:
        return {"Accept": "text/event-stream"} | ({"Last-Event-ID": self.last_id} if self.last_id else {})

    def timeout(self) -> httpx.Timeout:
        if self.deadline is None:
            return httpx.Timeout(30, read=STREAM_READ_SECONDS)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise JobTimeout("the job did not finish in time; it goes on")
        return httpx.Timeout(min(30.0, remaining), read=min(STREAM_READ_SECONDS, remaining))

    def read(self, sse: Any) -> tuple[JobEvent, bool]:
        """The event of an SSE message, and whether to hand it to the caller."""
        payload = sse.json()
        if sse.event == "error":
            raise _StreamBroke(APIError(None, str(payload.get("code", "stream_error")), str(payload.get("message")),
                                        payload.get("details"), payload.get("request_id")))
        event = JobEvent.model_validate(payload)
        if event.type is EventType.SNAPSHOT:
            first, self.want_snapshot = self.want_snapshot, False
            return event, first
        if event.id:
            self.last_id, self.failures = event.id, 0
        # The organization's stream carries every job's terminal event and never ends.
        self.done = event.type.terminal and not self.endless
        return event, True

    def broke(self, exc: BaseException | None) -> float:
        """After a connection ended early: the seconds to wait before the next, or raise when it's time to stop."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise JobTimeout("the job did not finish in time; it goes on") from exc
        self.failures += 1
        if self.failures > self.max_failures:
            if isinstance(exc, _StreamBroke):
                raise exc.error
            raise APIConnectionError(f"the event stream broke {self.failures} times in a row: {exc!r}") from exc
        return min(10.0, 0.25 * 2 ** (self.failures - 1))


def follow_job(t: SyncTransport, job_id: Any, follow: Follow, path: str | None = None) -> Iterator[JobEvent]:
    """A job's events until its terminal one (or, with `path`, another event stream's), reconnecting after
    `Last-Event-ID` whenever the stream drops."""
    path = path or f"/jobs/{job_id}/events"
    while not follow.done:
        exc: BaseException | None = None
        try:
            with t.stream(Call("GET", path, headers=follow.headers()), timeout=follow.timeout()) as response:
                for sse in sse_events(response):
                    event, show = follow.read(sse)
                    if show:
                        yield event
                    if follow.done:
                        return
        except (httpx.TransportError, _StreamBroke) as error:
            exc = error
        t.sleep(follow.broke(exc))


async def afollow_job(t: AsyncTransport, job_id: Any, follow: Follow,
                      path: str | None = None) -> AsyncIterator[JobEvent]:
    """`follow_job` for the async client."""
    path = path or f"/jobs/{job_id}/events"
    while not follow.done:
        exc: BaseException | None = None
        try:
            async with t.stream(Call("GET", path, headers=follow.headers()), timeout=follow.timeout()) as response:
                async for sse in aevents(response):
                    event, show = follow.read(sse)
                    if show:
                        yield event
                    if follow.done:
                        return
        except (httpx.TransportError, _StreamBroke) as error:
            exc = error
        await t.sleep(follow.broke(exc))


class _JobState:
    """What sync and async jobs share: the last known row, updated from the events that pass by."""

    data: JobOut
    # Set on an agent turn's job by `conversations.send` and `agents.chat`.
    conversation_id: Any = None
    message: Any = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.data.id} {self.data.kind} {self.data.status}>"

    @property
    def id(self) -> Any:
        return self.data.id

    @property
    def kind(self) -> str:
        return self.data.kind

    @property
    def status(self) -> str:
        return str(self.data.status)

    @property
    def progress(self) -> Any:
        return self.data.progress

    @property
    def result(self) -> dict[str, Any] | None:
        return self.data.result

    @property
    def error(self) -> Any:
        return self.data.error

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def _note(self, event: JobEvent) -> None:
        if event.type is EventType.SNAPSHOT:
            self.data = JobOut.model_validate(event.data)
        elif event.type is EventType.PROGRESS and {"done", "total"} <= event.data.keys():
            self.data = self.data.model_copy(update={"progress": self.data.progress.model_copy(update={
                "done": event.data["done"], "total": event.data["total"]})})
        elif event.type.terminal:
            self.data = self.data.model_copy(update={"status": event.type.value})

    def _checked(self, check: bool) -> None:
        if check and self.status != "succeeded":
            raise JobFailed(self)

    def _follow(self, t: Any, last_event_id: str | None, timeout: float | None) -> Follow:
        return Follow(last_event_id, max_failures=t.max_retries,
                      deadline=None if timeout is None else time.monotonic() + timeout)


class Job(_JobState):
    """A queued unit of work: `wait()`, `events()`, `cancel()`, `refresh()`; `data` is the job row (`JobOut`)."""

    def __init__(self, transport: SyncTransport, data: JobOut) -> None:
        self._t, self.data = transport, data

    def refresh(self) -> Job:
        """Read the job row again."""
        self.data = self._t(Call("GET", f"/jobs/{self.id}", out=JobOut))
        return self

    def cancel(self) -> Job:
        """Ask the job to stop (a queued one at once, a running one at its next checkpoint)."""
        self.data = self._t(Call("POST", f"/jobs/{self.id}/cancel", out=JobOut))
        return self

    def events(self, *, last_event_id: str | None = None, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events live until its terminal one: a `snapshot` first, then `progress`, `token`… Resumes
        after a dropped connection with `Last-Event-ID`; pass `last_event_id` to start after an event you had."""
        for event in follow_job(self._t, self.id, self._follow(self._t, last_event_id, timeout)):
            self._note(event)
            yield event

    def wait(self, timeout: float | None = None, *, check: bool = True) -> Job:
        """Block until the job ends (following its events), then return it read afresh. Raises `JobFailed` if it
        failed or was cancelled (unless `check=False`) and `JobTimeout` after `timeout` seconds."""
        if not self.done:
            for _ in self.events(timeout=timeout):
                pass
        self.refresh()
        self._checked(check)
        return self


class AsyncJob(_JobState):
    """`Job` for `AsyncAgentMem`: the same methods, awaited (`events()` is an async iterator)."""

    def __init__(self, transport: AsyncTransport, data: JobOut) -> None:
        self._t, self.data = transport, data

    async def refresh(self) -> AsyncJob:
        self.data = await self._t(Call("GET", f"/jobs/{self.id}", out=JobOut))
        return self

    async def cancel(self) -> AsyncJob:
        self.data = await self._t(Call("POST", f"/jobs/{self.id}/cancel", out=JobOut))
        return self

    async def events(self, *, last_event_id: str | None = None,
                     timeout: float | None = None) -> AsyncIterator[JobEvent]:
        async for event in afollow_job(self._t, self.id, self._follow(self._t, last_event_id, timeout)):
            self._note(event)
            yield event

    async def wait(self, timeout: float | None = None, *, check: bool = True) -> AsyncJob:
        if not self.done:
            async for _ in self.events(timeout=timeout):
                pass
        await self.refresh()
        self._checked(check)
        return self


def wrap_job(t: SyncTransport | AsyncTransport, data: JobOut) -> Job | AsyncJob:
    """The job object of the transport's kind."""
    return AsyncJob(t, data) if t.is_async else Job(t, data)  # type: ignore[arg-type]


class _TurnState:
    """An agent turn being streamed: its ids once known, the text so far, the result at the end."""

    def __init__(self, t: Any, conversation_id: Any, body: dict[str, Any], key: str | None,
                 agent_id: Any = None, conversation: dict[str, Any] | None = None) -> None:
        self._t, self._body, self._key = t, body, key
        self._agent_id, self._conversation = agent_id, conversation or {}
        self.conversation_id = conversation_id
        self.job_id: str | None = None
        self.message_id: str | None = None
        self.text = ""
        self.result: dict[str, Any] | None = None
        self.status: str | None = None

    def _create_call(self) -> Call:
        return Call("POST", f"/agents/{self._agent_id}/conversations", json=self._conversation, out=ConversationOut)

    def _post_call(self) -> Call:
        return Call("POST", f"/conversations/{self.conversation_id}/messages", params={"stream": True},
                    json=self._body, idempotency_key=self._key, replay_safe=True,
                    headers={"Accept": "text/event-stream"})

    def _started(self, response: httpx.Response) -> None:
        self.job_id = response.headers.get("X-Job-Id")
        self.message_id = response.headers.get("X-Message-Id")

    def _note(self, event: JobEvent) -> None:
        if event.type is EventType.TOKEN:
            self.text += event.data.get("text", "")
        elif event.type.terminal:
            self.status = event.type.value
            self.result = event.data.get("result")

    def _follow(self) -> Follow:
        return Follow(None, max_failures=self._t.max_retries, deadline=None)

    def _lost(self, exc: BaseException) -> None:
        if self.job_id is None:
            raise APIConnectionError(f"the turn's stream broke before it started: {exc!r}") from exc


class TurnStream(_TurnState):
    """Iterate for the turn's events: `token` (`data.text`), `tool_call`, `tool_result`, `message`, `usage`, then
    `succeeded` (`data.result.message`) or `failed`. `text` gathers the tokens; `job_id` names the turn."""

    def __iter__(self) -> Iterator[JobEvent]:
        if self.conversation_id is None:
            self.conversation_id = self._t(self._create_call()).id
        follow = self._follow()
        try:
            with self._t.stream(self._post_call(), timeout=follow.timeout()) as response:
                self._started(response)
                for sse in sse_events(response):
                    event, show = follow.read(sse)
                    if show:
                        self._note(event)
                        yield event
                    if follow.done:
                        return
        except (httpx.TransportError, _StreamBroke) as exc:
            self._lost(exc)
            self._t.sleep(follow.broke(exc))
        # The connection dropped but the turn goes on: the rest of its events from the job's stream.
        for event in follow_job(self._t, self.job_id, follow):
            self._note(event)
            yield event


class AsyncTurnStream(_TurnState):
    """`TurnStream` for `AsyncAgentMem`: `async for event in stream`."""

    async def __aiter__(self) -> AsyncIterator[JobEvent]:
        if self.conversation_id is None:
            self.conversation_id = (await self._t(self._create_call())).id
        follow = self._follow()
        try:
            async with self._t.stream(self._post_call(), timeout=follow.timeout()) as response:
                self._started(response)
                async for sse in aevents(response):
                    event, show = follow.read(sse)
                    if show:
                        self._note(event)
                        yield event
                    if follow.done:
                        return
        except (httpx.TransportError, _StreamBroke) as exc:
            self._lost(exc)
            await self._t.sleep(follow.broke(exc))
        async for event in afollow_job(self._t, self.job_id, follow):
            self._note(event)
            yield event
