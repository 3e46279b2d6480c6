"""pipelines/memories/store.py, the pure parts (content hashes, deterministic ids, ingest payloads), and
that it is the only writer of memories and their history (its writes run against PostgreSQL in
tests/integration/test_memories_store.py)."""

from __future__ import annotations

import ast
import hashlib
import uuid
from pathlib import Path

from pipelines.memories import store
from pipelines.memories.store import content_hash, ingest_payload, memory_id
from schemas.memories import MemoryBatchIn

ROOT = Path(__file__).resolve().parents[4]
STORE = "pipelines/memories/store.py"
HISTORY_WRITERS = {"record_added", "record_change"}
STATEMENTS = {"insert", "pg_insert", "update", "delete"}


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


def memory_writes(path: Path) -> list[tuple[int, str]]:
    """(line, what) of every statement writing the Memory table and every history version recorded, in a file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in HISTORY_WRITERS:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name) and node.id in HISTORY_WRITERS:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            table = node.args[0]
            if func in STATEMENTS and isinstance(table, ast.Name) and table.id == "Memory":
                found.append((node.lineno, f"{func}(Memory)"))
    return found


def test_only_the_store_writes_memories_and_their_history():
    sources = [p for package in ("api", "cli", "workers", "pipelines") for p in (ROOT / package).rglob("*.py")]
    violations = [f"{path.relative_to(ROOT).as_posix()}:{line} {what}" for path in sources
                  for line, what in memory_writes(path)
                  if path.relative_to(ROOT).as_posix() not in (STORE, "pipelines/memories/history.py")]
    assert not violations, f"write memories through {STORE} (add_many, replace_content, soft_delete):\n" + \
        "\n".join(violations)


def test_the_write_detector_sees_the_stores_own_writes():
    # Guards the detector itself: a blind check would pass the test above whatever the code does.
    found = {what for _, what in memory_writes(ROOT / STORE)}
    assert {"pg_insert(Memory)", "update(Memory)", "record_added", "record_change"} <= found


async def test_adding_no_rows_sends_no_statement():
    class NoSession:
        async def execute(self, *_args, **_kwargs):
            raise AssertionError("no statement expected")

    assert await store.add_many(NoSession(), [], job_id=None, actor=None, meta={}) == []
