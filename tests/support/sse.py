"""Reading Server-Sent Events and job outcomes in tests: wait on events, never sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from agentmem.sse import aevents

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Sse:
    """An event with its data decoded; `id` is the position to resume after it (None before any id)."""

    event: str
    data: dict[str, Any]
    id: str | None


async def read_sse(response: httpx.Response) -> AsyncIterator[Sse]:
    """Yield the events of an open event-stream response, parsed by the shared client parser."""
    async for event in aevents(response):
        yield Sse(event.event, event.json(), event.id or None)


async def sse_stream(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> AsyncIterator[Sse]:
    """Yield parsed events of an SSE endpoint (heartbeats skipped)."""
    async with client.stream("GET", path, headers=headers or {}) as response:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"SSE {path} answered {response.status_code}: {response.text}")
        async for event in read_sse(response):
            yield event


async def follow(client: httpx.AsyncClient, job_id: str, *, last_event_id: str | None = None,
                 timeout: float = 90, stop_after=None) -> list[Sse]:
    """Collect a job's events until its terminal event (or until `stop_after(event)` is true)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[Sse] = []

    async def collect() -> None:
        async for event in sse_stream(client, f"/api/v1/jobs/{job_id}/events", headers):
            events.append(event)
            if event.event in TERMINAL or (stop_after is not None and stop_after(event)):
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError as exc:
        raise AssertionError(f"job {job_id}: no terminal event within {timeout} s; got "
                             f"{[e.event for e in events]}") from exc
    return events


async def finish(client: httpx.AsyncClient, job_id: str, timeout: float = 90) -> dict[str, Any]:
    """Wait for a job's terminal event, then return the job row as the API shows it."""
    await follow(client, job_id, timeout=timeout)
    response = await client.get(f"/api/v1/jobs/{job_id}")
    response.raise_for_status()
    return response.json()
