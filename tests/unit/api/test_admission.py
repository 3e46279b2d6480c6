"""api/admission.py: a gate lets `limit` requests work at once and `queue` wait, briefly; it refuses the rest."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from api.admission import Gate, admission
from api.errors import install_error_handlers
from core.errors import Overloaded


def gate(limit: int = 1, queue: int = 1, wait: float = 30.0) -> Gate:
    return Gate("search", limit=limit, queue=queue, wait=wait, retry_after=2)


async def until(condition) -> None:
    """Let other tasks run until `condition()` holds (the event loop's own order, no clock)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_requests_within_the_limit_are_admitted_at_once():
    g = gate(limit=2, queue=0)
    await g.acquire()
    await g.acquire()
    assert g.running == 2


async def test_beyond_the_limit_and_a_full_queue_a_request_is_refused_at_once_as_overloaded():
    g = gate(limit=1, queue=0)
    await g.acquire()
    with pytest.raises(Overloaded) as refused:
        await g.acquire()
    assert refused.value.status_code == 503 and refused.value.code == "overloaded"
    assert refused.value.headers == {"Retry-After": "2"}
    assert refused.value.details == {"limit": "search", "reason": "queue_full"}
    assert g.running == 1 and g.waiting == 0


async def test_a_waiting_request_gets_the_slot_a_finished_one_gives_back():
    g = gate(limit=1, queue=1)
    await g.acquire()
    waiter = asyncio.create_task(g.acquire())
    await until(lambda: g.waiting == 1)
    g.release()
    await waiter
    assert g.running == 1 and g.waiting == 0


async def test_waiters_are_admitted_first_come_first_served():
    g = gate(limit=1, queue=3)
    await g.acquire()
    order: list[int] = []

    async def request(n: int) -> None:
        async with g:
            order.append(n)

    tasks = []
    for n in range(3):
        tasks.append(asyncio.create_task(request(n)))
        await until(lambda n=n: g.waiting == n + 1)
    g.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert g.running == 0


async def test_a_new_request_does_not_overtake_those_already_waiting():
    g = gate(limit=1, queue=1)
    await g.acquire()
    waiter = asyncio.create_task(g.acquire())
    await until(lambda: g.waiting == 1)
    with pytest.raises(Overloaded):  # the line is full, even though the slot is about to free up
        await g.acquire()
    g.release()
    await waiter


async def test_a_request_that_waited_too_long_is_refused_and_leaves_the_line():
    g = gate(limit=1, queue=1, wait=0.0)
    await g.acquire()
    with pytest.raises(Overloaded) as refused:
        await g.acquire()
    assert refused.value.details["reason"] == "wait_timeout"
    assert g.running == 1 and g.waiting == 0


async def test_a_cancelled_waiter_leaves_the_line_and_takes_no_slot():
    g = gate(limit=1, queue=1)
    await g.acquire()
    waiter = asyncio.create_task(g.acquire())
    await until(lambda: g.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert g.running == 1 and g.waiting == 0
    g.release()
    assert g.running == 0


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on_not_lost():
    g = gate(limit=1, queue=2)
    await g.acquire()
    first = asyncio.create_task(g.acquire())
    await until(lambda: g.waiting == 1)
    second = asyncio.create_task(g.acquire())
    await until(lambda: g.waiting == 2)
    g.release()       # hands the slot to `first`...
    first.cancel()    # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await second      # the slot went on to the next in line
    assert g.running == 1 and g.waiting == 0
    g.release()
    assert g.running == 0


async def test_the_slot_is_given_back_when_the_work_fails():
    g = gate(limit=1, queue=0)
    with pytest.raises(RuntimeError):
        async with g:
            raise RuntimeError("the search failed")
    assert g.running == 0
    async with g:
        assert g.running == 1


TEST_GATE = Gate("search", limit=1, queue=0, wait=30.0, retry_after=2)
AUTHENTICATED: list[str] = []


def authenticate(n: int) -> None:
    AUTHENTICATED.append(f"request {n}")


Slot = Annotated[None, admission(lambda: TEST_GATE)]
Who = Annotated[None, Depends(authenticate)]


def test_an_endpoint_declaring_a_slot_is_refused_before_its_other_dependencies_run():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/work/{n}")
    async def work(slot: Slot, n: int, who: Who, q: str = "x") -> dict:
        return {"n": n, "q": q, "running": TEST_GATE.running}

    client = TestClient(app)
    assert client.get("/work/1?q=y").json() == {"n": 1, "q": "y", "running": 1}
    assert TEST_GATE.running == 0 and AUTHENTICATED == ["request 1"]
    TEST_GATE.running = 1  # the one slot is taken
    refused = client.get("/work/2")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["Retry-After"] == "2"
    assert AUTHENTICATED == ["request 1"]
