"""Bad input gets a clear 4xx with a stable code, in the one error shape, and changes nothing."""

from __future__ import annotations

import uuid

import pytest

from schemas.memories import MAX_BATCH_ITEMS, MAX_CONTENT_CHARS

BAD_INGESTS = [
    ("empty content", {"items": [{"content": ""}]}, 422, "invalid_input"),
    ("blank content", {"items": [{"content": "   \n\t "}]}, 422, "invalid_input"),
    ("oversized content", {"items": [{"content": "x" * (MAX_CONTENT_CHARS + 1)}]}, 422, "invalid_input"),
    ("no items", {"items": []}, 422, "invalid_input"),
    ("too many items", {"items": [{"content": "a"}] * (MAX_BATCH_ITEMS + 1)}, 422, "invalid_input"),
    ("content not a string", {"items": [{"content": 5}]}, 422, "invalid_input"),
    ("metadata not an object", {"items": [{"content": "a", "metadata": "x"}]}, 422, "invalid_input"),
    ("items not a list", {"items": "a"}, 422, "invalid_input"),
    ("unknown field", {"items": [{"content": "a", "colour": "red"}]}, 422, "invalid_input"),
    ("oversized scope id", {"items": [{"content": "a", "user_id": "u" * 256}]}, 422, "invalid_input"),
    ("one bad item among good ones", {"items": [{"content": "fine"}] * 5 + [{"content": ""}]}, 422, "invalid_input"),
]


async def job_and_memory_counts(db):
    [[jobs, memories]] = await db("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM memories)")
    return jobs, memories


def assert_error_shape(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.mark.parametrize("name,body,status,code", BAD_INGESTS, ids=[b[0] for b in BAD_INGESTS])
async def test_bad_ingest_is_rejected_and_stores_nothing(client, db, name, body, status, code):
    before = await job_and_memory_counts(db)
    error = assert_error_shape(await client.post("/api/v1/memories", json=body), status, code)
    assert error["details"], "validation errors say which field"
    assert await job_and_memory_counts(db) == before


async def test_malformed_json_is_a_400(client, db):
    before = await job_and_memory_counts(db)
    response = await client.post("/api/v1/memories", content=b'{"items": [',
                                 headers={"content-type": "application/json"})
    assert_error_shape(response, 400, "malformed_json")
    assert await job_and_memory_counts(db) == before


async def test_idempotency_key_too_long_is_rejected(client, db):
    before = await job_and_memory_counts(db)
    response = await client.post("/api/v1/memories", json={"items": [{"content": "a"}]},
                                 headers={"Idempotency-Key": "k" * 256})
    assert_error_shape(response, 422, "invalid_input")
    assert await job_and_memory_counts(db) == before


UNKNOWN = str(uuid.uuid4())
BAD_REQUESTS = [
    ("unknown memory", "GET", f"/api/v1/memories/{UNKNOWN}", None, 404, "not_found"),
    ("unknown job", "GET", f"/api/v1/jobs/{UNKNOWN}", None, 404, "not_found"),
    ("cancel unknown job", "POST", f"/api/v1/jobs/{UNKNOWN}/cancel", None, 404, "not_found"),
    ("patch unknown memory", "PATCH", f"/api/v1/memories/{UNKNOWN}", {"content": "x"}, 404, "not_found"),
    ("delete unknown memory", "DELETE", f"/api/v1/memories/{UNKNOWN}", None, 404, "not_found"),
    ("malformed id", "GET", "/api/v1/memories/not-a-uuid", None, 404, "not_found"),
    ("a method the path lacks", "PATCH", "/api/v1/memories/search", None, 405, "method_not_allowed"),
    ("bad memories cursor", "GET", "/api/v1/memories?cursor=garbage", None, 422, "invalid_cursor"),
    ("bad jobs cursor", "GET", "/api/v1/jobs?cursor=bm90IGpzb24", None, 422, "invalid_cursor"),
    ("limit too large", "GET", "/api/v1/memories?limit=100000", None, 422, "invalid_input"),
    ("unknown job status", "GET", "/api/v1/jobs?status=sleeping", None, 422, "invalid_input"),
    ("patch with nothing", "PATCH", f"/api/v1/memories/{UNKNOWN}", {}, 422, "invalid_input"),
    ("empty search", "POST", "/api/v1/memories/search", {"query": ""}, 422, "invalid_input"),
    ("top_k too large", "POST", "/api/v1/memories/search", {"query": "q", "top_k": 1000}, 422, "invalid_input"),
    ("unknown route", "GET", "/api/v1/nothing-here", None, 404, "not_found"),
    ("wrong method", "PUT", "/api/v1/memories", None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("name,method,path,body,status,code", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_requests_get_a_clear_error_and_change_nothing(client, db, name, method, path, body, status, code):
    before = await job_and_memory_counts(db)
    response = await client.request(method, path, json=body)
    assert_error_shape(response, status, code)
    assert await job_and_memory_counts(db) == before


@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/api/v1/memories", "DELETE, GET, HEAD, POST"),
    ("PATCH", "/api/v1/memories/search", "POST"),
    ("PUT", f"/api/v1/blocks/{UNKNOWN}", "DELETE, GET, HEAD, PATCH"),
])
async def test_a_405_names_every_method_the_path_has(client, method, path, allowed):
    response = await client.request(method, path)
    assert_error_shape(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["details"]["allowed"] == allowed.split(", ")
