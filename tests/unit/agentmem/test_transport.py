"""agentmem/transport.py against `httpx.MockTransport`: retries after `Retry-After`, idempotency keys, errors,
pages. (The same client against the real stack: tests/integration/test_sdk.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from agentmem import AgentMem, APIConnectionError, APIError, AsyncAgentMem, NotFoundError, UnavailableError
from agentmem.transport import retry_after_seconds

JOB = {"id": "0b0f8e55-4a1c-4d59-a3d6-8d1b9a7c0e11", "kind": "ingest_memories", "status": "queued",
       "progress": {"done": 0, "total": 1}, "attempts": 0, "max_attempts": 5, "cancel_requested": False,
       "created_at": "2026-12-06T10:00:00Z", "updated_at": "2026-12-06T10:00:00Z"}


def error(status: int, code: str, headers: dict[str, str] | None = None, request_id: str = "req-1") -> httpx.Response:
    return httpx.Response(status, headers=(headers or {}) | {"X-Request-ID": request_id}, json={
        "error": {"code": code, "message": f"{code} happened", "details": {"why": code}, "request_id": request_id}})


def client_with(handler, **options) -> tuple[AgentMem, list[float]]:
    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(handler))
    client = AgentMem("http://api.test", "amk_test", http_client=http, **options)
    slept: list[float] = []
    client.transport.sleep = slept.append
    return client, slept


def test_a_429_is_retried_after_the_seconds_retry_after_says_with_the_same_idempotency_key():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return error(429, "rate_limited", {"Retry-After": "7"})
        return httpx.Response(202, json=JOB)

    client, slept = client_with(handler)
    job = client.memories.add(["I like tea"], user_id="alice")
    assert str(job.id) == JOB["id"] and job.status == "queued"
    assert slept == [7.0]
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 2 and len(keys) == 1 and keys.pop().startswith("sdk-")
    assert seen[0].headers["Authorization"] == "Bearer amk_test"
    assert json.loads(seen[0].content) == {"items": [{"content": "I like tea"}], "user_id": "alice"}


def test_a_callers_idempotency_key_is_sent_as_given():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=JOB)

    client, _ = client_with(handler)
    client.memories.add(["x"], idempotency_key="batch-7")
    client.memories.add(["x"])
    assert seen[0].headers["Idempotency-Key"] == "batch-7"
    assert seen[1].headers["Idempotency-Key"] != "batch-7"


def test_retry_after_is_capped_and_a_503_past_the_retries_is_raised_with_the_apis_error():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(503, "overloaded", {"Retry-After": "600"}, request_id="req-503")

    client, slept = client_with(handler, max_retries=2, max_backoff=30)
    with pytest.raises(UnavailableError) as raised:
        client.memories.search("tea")
    assert len(calls) == 3 and slept == [30.0, 30.0]
    exc = raised.value
    assert (exc.status_code, exc.code, exc.message) == (503, "overloaded", "overloaded happened")
    assert exc.details == {"why": "overloaded"} and exc.request_id == "req-503"


def test_an_error_that_is_not_retried_raises_at_once_with_code_details_and_request_id():
    def handler(request: httpx.Request) -> httpx.Response:
        return error(404, "not_found", request_id="req-404")

    client, slept = client_with(handler)
    with pytest.raises(NotFoundError) as raised:
        client.memories.get("0b0f8e55-4a1c-4d59-a3d6-8d1b9a7c0e11")
    assert slept == [] and raised.value.code == "not_found" and raised.value.request_id == "req-404"


def test_a_proxys_error_page_still_raises_with_the_status_and_the_request_id_header():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>", headers={"X-Request-ID": "edge-9"})

    client, _ = client_with(handler)
    with pytest.raises(APIError) as raised:
        client.jobs.get(JOB["id"])
    assert raised.value.status_code == 502 and raised.value.code == "http_502"
    assert raised.value.request_id == "edge-9"


def test_a_broken_connection_is_retried_for_reads_and_deduplicated_writes_but_not_for_other_writes():
    attempts = {"GET": 0, "POST": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        attempts[request.method] += 1
        if attempts[request.method] == 1:
            raise httpx.ReadError("connection reset", request=request)
        if request.method == "GET":
            return httpx.Response(200, json=JOB)
        return httpx.Response(201, json={})

    client, _ = client_with(handler)
    assert str(client.jobs.get(JOB["id"]).id) == JOB["id"] and attempts["GET"] == 2
    with pytest.raises(APIConnectionError):   # creating an agent is not deduplicated: never sent twice
        client.agents.create("helper")
    assert attempts["POST"] == 1


def test_an_http_date_retry_after_counts_from_now():
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    seconds = retry_after_seconds(httpx.Response(429, headers={"Retry-After": later}))
    assert 80 < seconds <= 90
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None


def memory(n: int) -> dict:
    return {"id": f"00000000-0000-0000-0000-{n:012d}", "content": f"m{n}", "metadata": {}, "content_hash": "h",
            "embedding_status": "ready", "created_at": "2026-12-06T10:00:00Z", "updated_at": "2026-12-06T10:00:00Z"}


def paged(request: httpx.Request) -> httpx.Response:
    """Five memories, two a page, the cursor being the index of the next one."""
    start = int(request.url.params.get("cursor", "0"))
    limit = int(request.url.params["limit"])
    end = min(start + limit, 5)
    return httpx.Response(200, json={"items": [memory(n) for n in range(start, end)],
                                     "next_cursor": str(end) if end < 5 else None})


def test_a_list_is_an_iterator_that_fetches_pages_as_it_goes():
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return paged(request)

    client, _ = client_with(handler)
    memories = client.memories.list(user_id="alice", page_size=2)
    assert seen == []   # nothing fetched before the iteration starts
    assert next(memories).content == "m0" and len(seen) == 1
    assert [m.content for m in memories] == ["m1", "m2", "m3", "m4"]
    assert [u.params.get("cursor") for u in seen] == [None, "2", "4"]
    assert {u.params["user_id"] for u in seen} == {"alice"}


async def test_the_async_client_retries_after_retry_after_and_pages_the_same_way():
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/memories") and request.method == "POST":
            calls["n"] += 1
            return error(429, "rate_limited", {"Retry-After": "3"}) if calls["n"] == 1 else httpx.Response(202,
                                                                                                         json=JOB)
        return paged(request)

    http = httpx.AsyncClient(base_url="http://api.test", transport=httpx.MockTransport(handler))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with AsyncAgentMem("http://api.test", "amk_test", http_client=http) as client:
        client.transport.sleep = sleep
        job = await client.memories.add(["x"])
        assert str(job.id) == JOB["id"] and slept == [3.0]
        assert [m.content async for m in client.memories.list(page_size=2)] == [f"m{n}" for n in range(5)]
