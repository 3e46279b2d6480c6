"""pipelines/jobs/rows.py, the parts without a database: request fingerprints and page cursors."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from core.errors import InvalidInput
from pipelines.jobs.rows import request_hash
from pipelines.pages import decode_cursor, encode_cursor
from schemas.enums import JobKind

# --- request_hash --------------------------------------------------------------------------------

def test_request_hash_is_the_same_whatever_the_key_order():
    a = {"items": [{"content": "x", "metadata": {"a": 1, "b": 2}}], "user_id": "u"}
    b = {"user_id": "u", "items": [{"metadata": {"b": 2, "a": 1}, "content": "x"}]}
    assert request_hash(JobKind.INGEST_MEMORIES, a) == request_hash(JobKind.INGEST_MEMORIES, b)


def test_request_hash_is_a_sha256_hex_digest():
    digest = request_hash(JobKind.INGEST_MEMORIES, {"items": []})
    assert len(digest) == 64
    int(digest, 16)


@pytest.mark.parametrize("other", [
    {"items": [{"content": "y"}]},
    {"items": [{"content": "x"}, {"content": "x"}]},
    {"items": [{"content": "x", "metadata": {}}]},
    {"items": [{"content": "x"}], "user_id": None},
])
def test_request_hash_differs_for_different_payloads(other):
    base = {"items": [{"content": "x"}]}
    assert request_hash(JobKind.INGEST_MEMORIES, base) != request_hash(JobKind.INGEST_MEMORIES, other)


def test_request_hash_differs_for_different_kinds_with_the_same_payload():
    payload = {"memory_id": str(uuid.uuid4())}
    assert request_hash(JobKind.INGEST_MEMORIES, payload) != request_hash(JobKind.EMBED_MEMORY, payload)


def test_request_hash_accepts_values_json_cannot_encode_natively():
    payload = {"id": uuid.UUID(int=1), "at": datetime(2024, 1, 1, tzinfo=UTC)}
    assert request_hash(JobKind.EMBED_MEMORY, payload) == request_hash(JobKind.EMBED_MEMORY, dict(payload))


# --- cursors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("created_at", [
    datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59),
])
def test_decode_cursor_returns_what_encode_cursor_was_given(created_at):
    row_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(created_at, row_id)) == (created_at, row_id)


def test_encode_cursor_is_url_safe_without_padding():
    for _ in range(20):
        cursor = encode_cursor(datetime.now(UTC), uuid.uuid4())
        assert not set(cursor) & set("+/=")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "not a cursor!!",
    "%%%%",
    "é",
    "",
    b64(b"hello, not json"),
    b64(b"\xff\xfe\xfa"),
    b64(json.dumps({"created": "2024-01-01", "id": str(uuid.uuid4())}).encode()),
    b64(json.dumps(["2024-01-01T00:00:00"]).encode()),
    b64(json.dumps(["2024-01-01T00:00:00", str(uuid.uuid4()), "extra"]).encode()),
    b64(json.dumps([1, 2]).encode()),
    b64(json.dumps(None).encode()),
    b64(json.dumps(["yesterday", str(uuid.uuid4())]).encode()),
    b64(json.dumps(["2024-01-01T00:00:00", "not-a-uuid"]).encode()),
])
def test_decode_cursor_rejects_garbage_with_invalid_cursor(cursor):
    with pytest.raises(InvalidInput) as exc:
        decode_cursor(cursor)
    assert exc.value.code == "invalid_cursor"
    assert exc.value.status_code == 422


def test_decode_cursor_error_quotes_at_most_100_characters_of_the_cursor():
    with pytest.raises(InvalidInput) as exc:
        decode_cursor("!" * 1000)
    assert exc.value.details == {"cursor": "!" * 100}
