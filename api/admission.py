"""Admission control: how many requests of a kind do their expensive work at once in this process.

A search embeds its query on the API's one model thread and holds a database connection from its
first statement to its last. Let 200 in at once and they all queue, for the model thread and for the
pool: every one of them is slow, and those that wait longest for a connection fail. A `Gate` lets
`limit` of them work at once and `queue` more wait, each at most `wait` seconds; any other is
refused at once with 503 `overloaded` and `Retry-After`, having done nothing. What is admitted
is answered within about `wait` seconds plus its own work; what is refused costs next to nothing.

A route declares its gate as its first parameter (`slot: SearchSlot`), so that the gate is passed
before anything else runs: authentication included, a refusal costs no database or Redis round trip.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import Annotated, Self

from fastapi import Depends

from core import timing
from core.errors import Overloaded
from core.settings import get_settings


class Gate:
    """At most `limit` holders at once, at most `queue` waiting, each waiting at most `wait` seconds."""

    def __init__(self, name: str, *, limit: int, queue: int, wait: float, retry_after: int) -> None:
        self.name = name
        self.limit = max(1, limit)
        self.queue = max(0, queue)
        self.wait = wait
        self.retry_after = retry_after
        self.running = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _refusal(self, why: str) -> Overloaded:
        return Overloaded(f"too many {self.name} requests at once ({why}); retry after {self.retry_after} s",
                          retry_after=self.retry_after, details={"limit": self.name, "reason": why})

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one if need be; raise `Overloaded` if the line is full or
        the wait runs out."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        if len(self._waiters) >= self.queue:
            raise self._refusal("queue_full")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: pass it on rather than lose it.
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise self._refusal("wait_timeout") from None
            raise
        # Admitted: `release` handed this waiter its slot, already counted in `running`.

    def release(self) -> None:
        """Give the slot back: to the longest waiter, else to the pool of free slots."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()


@cache
def search_gate() -> Gate:
    """This process's gate for searches (query embedding and SQL), per settings."""
    settings = get_settings()
    return Gate("search", limit=settings.search_concurrency, queue=settings.search_queue,
                wait=settings.search_queue_seconds, retry_after=settings.overload_retry_after_seconds)


def admission(gate: Callable[[], Gate]):
    """A dependency that holds one of `gate()`'s slots while the endpoint runs (`Annotated[None, …]`).

    Declare it as the endpoint's first parameter: dependencies are solved in order, so a refused
    request costs no database or Redis round trip, not even authentication's, and an admitted one
    authenticates inside its slot (its connection checkouts are bounded too).
    """

    async def slot() -> AsyncIterator[None]:
        admitting = gate()
        with timing.stage("queue"):  # Server-Timing: how long it waited for a slot (or to be refused)
            await admitting.acquire()
        try:
            yield
        finally:
            admitting.release()

    # "function": the slot is given back as soon as the endpoint returns, not after the response is sent.
    return Depends(slot, scope="function")


SearchSlot = Annotated[None, admission(search_gate)]
