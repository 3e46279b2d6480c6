"""Under more load than it can take, the API answers what it can and refuses the rest at once with
503 `overloaded` and `Retry-After`: never `database_unavailable` for a database that is fine, never
a request left waiting past its limit, and /readyz stays ready.

Each test runs an API process of its own with tiny limits against the test stack's services. Its
searches are made slow by the model server (`@@slow:N@@` in the query delays its embedding), so
the first one holds its search slot, or the pool's one connection, while the others arrive.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.support.stack import free_port, wait_http

SLOW = 3  # seconds each slow search's embedding takes: far longer than any limit below


def api_with(stack, name: str, **overrides: str) -> tuple:
    port = free_port()
    proc = stack.spawn(name, ["-m", "cli.main", "api", "--port", str(port)], env=stack.env | overrides)
    wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
    return proc, f"http://127.0.0.1:{port}"


def slow_search(client: httpx.AsyncClient, scope: str, n: int) -> asyncio.Task:
    body = {"query": f"@@slow:{SLOW}@@ what does person {n} like to eat", "user_id": scope, "mode": "hybrid"}
    return asyncio.create_task(client.post("/api/v1/memories/search", json=body))


def assert_overloaded(response: httpx.Response) -> dict:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "overloaded", error
    assert int(response.headers["retry-after"]) >= 1
    return error


async def first_refusal(tasks: list[asyncio.Task]) -> None:
    """Wait until one of the requests has been answered with a refusal (each has its own deadline)."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if any(t.result().status_code == 503 for t in done):
            return
    raise AssertionError("no request was refused")


async def test_searches_beyond_the_admission_limit_are_refused_at_once_with_503_overloaded(stack, main_tenant, scope):
    proc, url = api_with(stack, "api-admission", AGENTMEM_SEARCH_CONCURRENCY="1", AGENTMEM_SEARCH_QUEUE="1",
                         AGENTMEM_SEARCH_QUEUE_SECONDS="0.2")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=main_tenant.headers()) as c:
            searches = [slow_search(c, scope, n) for n in range(6)]
            await first_refusal(searches)
            # A search holds the one slot for seconds: the service is busy, and ready.
            ready = await c.get("/readyz")
            assert ready.status_code == 200, ready.text
            responses = await asyncio.gather(*searches)
            assert sorted(r.status_code for r in responses) == [200] + [503] * 5
            reasons = Counter(assert_overloaded(r)["details"]["reason"] for r in responses if r.status_code == 503)
            # One waited in line for its 0.2 s and was refused; the others found the line full.
            assert reasons["wait_timeout"] >= 1 and set(reasons) <= {"wait_timeout", "queue_full"}
            # The slots all came back: a search now goes straight through.
            again = await c.post("/api/v1/memories/search", json={"query": "food", "user_id": scope})
            assert again.status_code == 200, again.text
    finally:
        proc.stop()


async def test_no_free_pooled_connection_is_503_overloaded_not_database_unavailable_and_readyz_stays_ready(
        stack, main_tenant, scope):
    proc, url = api_with(stack, "api-tiny-pool", AGENTMEM_DB_POOL_SIZE="1", AGENTMEM_DB_MAX_OVERFLOW="0",
                         AGENTMEM_DB_POOL_TIMEOUT_SECONDS="0.2")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=main_tenant.headers()) as c:
            # Each search holds the pool's one connection from its first statement until its slow
            # embedding is back; authentication needs a connection too.
            searches = [slow_search(c, scope, n) for n in range(4)]
            await first_refusal(searches)
            ready = await c.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["database"]["ok"] is True
            responses = await asyncio.gather(*searches)
            statuses = Counter(r.status_code for r in responses)
            assert statuses[200] >= 1 and statuses[503] >= 1 and set(statuses) == {200, 503}, statuses
            for response in responses:
                if response.status_code == 503:
                    assert_overloaded(response)
            again = await c.get("/api/v1/jobs")
            assert again.status_code == 200, again.text
    finally:
        proc.stop()
