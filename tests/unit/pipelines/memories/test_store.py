"""pipelines/memories/store.py, the pure parts: content hashes, deterministic ids, ingest payloads."""

from __future__ import annotations

import hashlib
import uuid

from pipelines.memories.store import content_hash, ingest_payload, memory_id
from schemas.memories import MemoryBatchIn


def test_content_hash_is_the_sha256_of_the_utf8_content():
    assert content_hash("thé vert") == hashlib.sha256("thé vert".encode()).hexdigest()
    assert content_hash("a") != content_hash("a ")


def test_memory_id_is_the_same_for_the_same_job_and_index():
    job_id = uuid.uuid4()
    assert memory_id(job_id, 3) == memory_id(uuid.UUID(str(job_id)), 3)


def test_memory_id_differs_across_indexes_and_jobs():
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    ids = {memory_id(job_a, i) for i in range(100)} | {memory_id(job_b, i) for i in range(100)}
    assert len(ids) == 200


def test_ingest_payload_applies_batch_scope_to_items_that_leave_it_unset():
    batch = MemoryBatchIn.model_validate({
        "user_id": "batch-user", "agent_id": "batch-agent",
        "items": [{"content": "one"},
                  {"content": "two", "user_id": "item-user", "metadata": {"k": 1}}],
    })
    assert ingest_payload(batch) == {"items": [
        {"content": "one", "metadata": {}, "user_id": "batch-user", "agent_id": "batch-agent", "run_id": None},
        {"content": "two", "metadata": {"k": 1}, "user_id": "item-user", "agent_id": "batch-agent", "run_id": None},
    ]}


def test_ingest_payload_marks_deduplicate_only_when_asked_and_keeps_a_role_in_metadata():
    plain = MemoryBatchIn.model_validate({"items": [{"content": "one"}]})
    assert "deduplicate" not in ingest_payload(plain)  # replays of older batches hash the same
    batch = MemoryBatchIn.model_validate({"deduplicate": True, "items": [
        {"content": "one", "role": "assistant"}, {"content": "two", "role": "user", "metadata": {"role": "mine"}}]})
    payload = ingest_payload(batch)
    assert payload["deduplicate"] is True
    assert [i["metadata"] for i in payload["items"]] == [{"role": "assistant"}, {"role": "mine"}]


def test_extraction_payload_holds_the_conversation_its_scope_and_the_merged_metadata():
    from pipelines.memories.store import extraction_payload

    batch = MemoryBatchIn.model_validate({"infer": True, "user_id": "alice", "messages": [
        {"content": "I live in Paris", "metadata": {"channel": "chat", "n": 1}},
        {"role": "assistant", "content": "Nice!", "metadata": {"n": 2}}]})
    assert extraction_payload(batch) == {
        "messages": [{"role": "user", "content": "I live in Paris"}, {"role": "assistant", "content": "Nice!"}],
        "user_id": "alice", "agent_id": None, "run_id": None, "metadata": {"channel": "chat", "n": 2}}
