"""The MCP tools' REST seam, against httpx's MockTransport: errors keep the API's code, jobs are followed
only as long as allowed, and a failed job is a tool error."""

from __future__ import annotations

import json
import time
import uuid

import anyio
import httpx
import pytest

from api.mcp_tools import ApiError, failed, job_result, ok, rest, wait_for_job


def client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api")


def job(status: str, **fields) -> dict:
    return {"id": str(uuid.uuid4()), "kind": "ingest_memories", "status": status, "request_id": "r1", **fields}


async def test_an_api_error_keeps_its_status_code_and_message():
    error = {"code": "permission_denied", "message": "this needs the 'memories:write' permission",
             "details": {"role": "viewer"}, "request_id": "abc"}
    async with client(lambda request: httpx.Response(403, json={"error": error})) as http:
        with pytest.raises(ApiError) as raised:
            await rest(http, "POST", "/api/v1/memories", body={"items": []})
    assert (raised.value.status, raised.value.error) == (403, error)
    result = failed(raised.value.status, raised.value.error)
    assert result.is_error and json.loads(result.content[0].text) == {"error": error, "status": 403}


async def test_an_answer_without_the_error_shape_is_still_a_coded_error():
    async with client(lambda request: httpx.Response(502, text="<html>bad gateway</html>")) as http:
        with pytest.raises(ApiError) as raised:
            await rest(http, "GET", "/api/v1/jobs/x")
    assert raised.value.status == 502 and raised.value.error["code"] == "http_error"
    assert "bad gateway" in raised.value.error["message"]


async def test_unset_parameters_are_left_out_of_the_query():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    async with client(answer) as http:
        await rest(http, "GET", "/api/v1/memories", params={"user_id": "u1", "agent_id": None, "limit": 5})
    assert seen == [{"user_id": "u1", "limit": "5"}]


async def test_no_wait_or_a_zero_cap_answers_the_job_without_another_request(override_settings):
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request {request.url}")

    queued = job("queued")
    async with client(never) as http:
        assert await wait_for_job(http, queued, 0) is queued
        override_settings(mcp_max_wait_seconds=0)
        assert await wait_for_job(http, queued, 30) is queued
        assert await wait_for_job(http, job("succeeded"), 30)


async def test_waiting_follows_the_event_stream_then_reads_the_row():
    queued, finished = job("queued"), job("succeeded", result={"inserted": 1})
    finished["id"] = queued["id"]
    paths = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text="event: succeeded\ndata: {}\n\n",
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=finished)

    async with client(answer) as http:
        assert await wait_for_job(http, queued, 10) == finished
    assert paths == [f"/api/v1/jobs/{queued['id']}/events", f"/api/v1/jobs/{queued['id']}"]


def test_a_failed_job_is_a_tool_error_with_the_jobs_code():
    broken = job("failed", error={"code": "embedding_unavailable", "message": "the model server is down"})
    result = job_result(broken)
    assert result.is_error
    assert result.structured_content["error"]["code"] == "embedding_unavailable"
    assert result.structured_content["job"] == broken
    succeeded = job_result(job("succeeded"), answer="hi")
    assert not succeeded.is_error and succeeded.structured_content["answer"] == "hi"


def test_a_list_answer_is_structured_as_items():
    assert ok([1, 2]).structured_content == {"items": [1, 2]}
    assert json.loads(ok({"a": 1}).content[0].text) == {"a": 1}


async def test_a_stream_that_outlasts_the_wait_is_left_and_the_row_read():
    queued = job("running")
    never = anyio.Event()

    async def endless():
        yield b": heartbeat\n\n"
        await never.wait()  # a job that does not finish within the wait
        yield b""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=endless(), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=queued)

    started = time.monotonic()
    async with client(answer) as http:
        assert await wait_for_job(http, queued, 0.3) == queued
    assert time.monotonic() - started < 5
