"""The memory writes of pipelines/memories/store.py against real PostgreSQL: each writes the memory row and
its history version in one transaction (the two rows carry the same `xmin`), with the versions, events,
job, actor and metadata the pipelines rely on."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from core.db import session_scope
from core.settings import get_settings
from pipelines.memories import store
from pipelines.memories.store import content_hash


@pytest.fixture
def vector():
    """A vector of the stored dimension, different per call."""

    def make(seed: float) -> list[float]:
        return [seed] + [0.0] * (get_settings().embedding_dim - 1)

    return make


def memory_row(org_id: uuid.UUID, job_id: uuid.UUID, index: int, content: str, embedding: list[float]) -> dict:
    digest = content_hash(content)
    return dict(id=store.memory_id(job_id, index), org_id=org_id, user_id="store-test", content=content,
                meta={"n": index}, content_hash=digest, embedding=embedding, embedded_hash=digest,
                source_job_id=job_id, source_index=index)


async def versions(db, memory_id: uuid.UUID) -> list[tuple]:
    return [tuple(r) for r in await db(
        "SELECT version, event, old_content, new_content, metadata, job_id, actor FROM memory_history "
        "WHERE memory_id = :m ORDER BY version", m=memory_id)]


async def embedded(db, memory_id: uuid.UUID) -> tuple[str | None, float | None]:
    """The hash of the content the memory's vector was computed from, and the vector's first component."""
    [row] = await db("SELECT embedded_hash, (embedding::real[])[1] FROM memories WHERE id = :m", m=memory_id)
    return tuple(row)


async def written_together(db, memory_id: uuid.UUID, version: int) -> bool:
    """The memory row was last written by the transaction that recorded this version."""
    [[same]] = await db("SELECT m.xmin::text = h.xmin::text FROM memories m JOIN memory_history h "
                        "ON h.memory_id = m.id WHERE m.id = :m AND h.version = :v", m=memory_id, v=version)
    return same


async def test_add_many_inserts_rows_with_version_one_and_a_repeat_adds_nothing(tenant, db, vector):
    job_id = uuid.uuid4()
    rows = [memory_row(tenant.org_id, job_id, i, f"fact {i}", vector(i + 1.0)) for i in range(3)]
    async with session_scope() as session:
        inserted = await store.add_many(session, rows, job_id=job_id, actor="tester", meta={"source": "ingest"})
        await session.commit()
    assert sorted(inserted) == sorted(r["id"] for r in rows)
    for row in rows:
        assert await versions(db, row["id"]) == [(1, "ADD", None, row["content"], {"source": "ingest"}, job_id,
                                                  "tester")]
        assert await written_together(db, row["id"], 1)

    # A redelivered job: the stored rows stay, and so does their one version.
    async with session_scope() as session:
        again = await store.add_many(session, rows[1:] + [memory_row(tenant.org_id, job_id, 3, "fact 3", vector(4.0))],
                                     job_id=job_id, actor="someone else", meta={"source": "retry"})
        await session.commit()
    assert again == [store.memory_id(job_id, 3)]
    assert [v[4] for v in await versions(db, rows[1]["id"])] == [{"source": "ingest"}]
    [[count]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job_id)
    assert count == 4


async def test_add_many_stores_rows_of_different_columns_each_with_its_own_values(tenant, db, vector):
    # Rows are sent as parameter sets of one statement: one without `expires_at` or a vector keeps the
    # column defaults, its neighbours keep theirs.
    job_id = uuid.uuid4()
    plain = memory_row(tenant.org_id, job_id, 0, "plain", vector(1.0))
    expiring = memory_row(tenant.org_id, job_id, 1, "expiring", vector(2.0)) | {
        "expires_at": datetime(2099, 1, 1, tzinfo=UTC)}
    bare = {k: v for k, v in memory_row(tenant.org_id, job_id, 2, "bare", vector(3.0)).items()
            if k not in ("embedding", "embedded_hash", "user_id")}
    async with session_scope() as session:
        inserted = await store.add_many(session, [plain, expiring, bare], job_id=job_id, actor=None, meta={})
        await session.commit()
    assert sorted(inserted) == sorted(r["id"] for r in (plain, expiring, bare))
    stored = {r[0]: tuple(r[1:]) for r in await db(
        "SELECT content, user_id, expires_at IS NOT NULL, embedding IS NOT NULL, embedding_model IS NOT NULL "
        "FROM memories WHERE source_job_id = :j", j=job_id)}
    assert stored == {"plain": ("store-test", False, True, True), "expiring": ("store-test", True, True, True),
                      "bare": (None, False, False, False)}


async def test_a_memory_keeps_its_vector_in_the_row_and_a_long_text_goes_out_of_line_first(tenant, db):
    # Migration 0017: a vector out of line cost every exact scan a TOAST fetch per row. A short memory's row
    # (vector 1.5 KB + a paragraph + its fts) passed PostgreSQL's 2 KB and lost its vector to the TOAST table.
    [[has_probe]] = await db("SELECT count(*) > 0 FROM pg_proc WHERE proname = 'pg_column_toast_chunk_id'")
    if not has_probe:
        pytest.skip("pg_column_toast_chunk_id needs PostgreSQL 17 or later")
    rng = random.Random(17)
    words = ["harbour", "violin", "Tuesday", "allergic", "sister", "marathon", "Bergen", "rent", "cello", "garden"]
    paragraph = " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(60))  # ~600 characters
    long_text = " ".join(rng.choice(words) + str(rng.randrange(100000)) for _ in range(3000))  # ~30 KB
    job_id = uuid.uuid4()
    dim = get_settings().embedding_dim
    rows = [memory_row(tenant.org_id, job_id, i, content, [rng.gauss(0, 1) for _ in range(dim)])
            for i, content in enumerate([paragraph, long_text])]
    async with session_scope() as session:
        await store.add_many(session, rows, job_id=job_id, actor=None, meta={})
        await session.commit()
    stored = {r[0]: tuple(r[1:]) for r in await db(
        "SELECT length(content) > 10000, pg_column_toast_chunk_id(embedding) IS NULL, "
        "pg_column_toast_chunk_id(content) IS NULL, pg_column_size(m.*) FROM memories m WHERE source_job_id = :j",
        j=job_id)}
    assert stored[False][:2] == (True, True) and stored[False][2] > 2100  # past the old 2 KB, whole in the row
    assert stored[True][:2] == (True, False)  # the long text went out of line, the vector stayed


async def test_add_many_without_a_constraint_skips_a_row_that_conflicts_on_its_id(tenant, db, vector):
    job_id = uuid.uuid4()
    row = memory_row(tenant.org_id, job_id, 0, "a fact", vector(1.0))
    async with session_scope() as session:
        assert await store.add_many(session, [row], job_id=job_id, actor=None, meta={"fact": "a"}, conflict=None)
        # Same id, another source index: only a conflict on any constraint lets it pass without an error.
        assert await store.add_many(session, [row | {"source_index": 7}], job_id=job_id, actor=None,
                                    meta={"fact": "b"}, conflict=None) == []
        await session.commit()
    assert [v[4] for v in await versions(db, row["id"])] == [{"fact": "a"}]


async def test_replace_content_writes_the_row_and_the_next_version_together(tenant, db, vector):
    job_id = uuid.uuid4()
    row = memory_row(tenant.org_id, job_id, 0, "Lives in Paris", vector(1.0))
    async with session_scope() as session:
        await store.add_many(session, [row], job_id=job_id, actor="tester", meta={"source": "ingest"})
        await session.commit()

    # With a new vector (extraction): searchable by the new content at once.
    async with session_scope() as session:
        locked = await store.get_memory(session, tenant.org_id, row["id"], for_update=True)
        updated = await store.replace_content(
            session, locked.id, org_id=tenant.org_id, old_content=locked.content, content="Lives in Lisbon",
            embedding=vector(2.0), job_id=job_id, actor="extractor", meta={"source": "extraction"})
        await session.commit()
    assert updated.content == "Lives in Lisbon" and updated.content_hash == content_hash("Lives in Lisbon")
    embedded_hash, first = await embedded(db, row["id"])
    assert embedded_hash == content_hash("Lives in Lisbon") and first == pytest.approx(2.0)
    assert await written_together(db, row["id"], 2)

    # Without (a PATCH): the old vector stays until an embed job replaces it; metadata in the same write.
    async with session_scope() as session:
        locked = await store.get_memory(session, tenant.org_id, row["id"], for_update=True)
        updated = await store.replace_content(
            session, locked.id, org_id=tenant.org_id, old_content=locked.content, content="Lives in Madrid",
            metadata={"topic": "home"}, job_id=None, actor="api_key:x", meta={"source": "api"})
        await session.commit()
    assert updated.meta == {"topic": "home"}
    embedded_hash, first = await embedded(db, row["id"])
    assert embedded_hash == content_hash("Lives in Lisbon") and first == pytest.approx(2.0)
    assert await written_together(db, row["id"], 3)
    assert await versions(db, row["id"]) == [
        (1, "ADD", None, "Lives in Paris", {"source": "ingest"}, job_id, "tester"),
        (2, "UPDATE", "Lives in Paris", "Lives in Lisbon", {"source": "extraction"}, job_id, "extractor"),
        (3, "UPDATE", "Lives in Lisbon", "Lives in Madrid", {"source": "api"}, None, "api_key:x")]


async def test_soft_delete_marks_the_row_and_records_the_last_version_together(tenant, db, vector):
    job_id = uuid.uuid4()
    row = memory_row(tenant.org_id, job_id, 0, "Has a cat", vector(1.0))
    async with session_scope() as session:
        await store.add_many(session, [row], job_id=job_id, actor="tester", meta={"source": "ingest"})
        await session.commit()
    async with session_scope() as session:
        locked = await store.get_memory(session, tenant.org_id, row["id"], for_update=True)
        await store.soft_delete(session, locked.id, org_id=tenant.org_id, old_content=locked.content,
                                job_id=job_id, actor="extractor", meta={"fact": "The cat died"})
        await session.commit()
    [[deleted]] = await db("SELECT deleted_at IS NOT NULL AND deleted_at = updated_at FROM memories WHERE id = :m",
                           m=row["id"])
    assert deleted
    assert await written_together(db, row["id"], 2)
    assert (await versions(db, row["id"]))[1:] == [
        (2, "DELETE", "Has a cat", None, {"fact": "The cat died"}, job_id, "extractor")]


async def test_set_embedding_attaches_a_vector_only_to_the_content_it_was_computed_from(tenant, db, vector):
    job_id = uuid.uuid4()
    row = memory_row(tenant.org_id, job_id, 0, "Reads sci-fi", vector(1.0)) | {"embedding": None,
                                                                              "embedded_hash": None}
    async with session_scope() as session:
        await store.add_many(session, [row], job_id=job_id, actor=None, meta={})
        await session.commit()
    async with session_scope() as session:
        stale = await store.set_embedding(session, row["id"], expected_hash=content_hash("older"),
                                          embedding=vector(9.0))
        fresh = await store.set_embedding(session, row["id"], expected_hash=row["content_hash"],
                                          embedding=vector(3.0))
        await session.commit()
    assert (stale, fresh) == (False, True)
    embedded_hash, first = await embedded(db, row["id"])
    assert embedded_hash == row["content_hash"] and first == pytest.approx(3.0)
    assert [v[0] for v in await versions(db, row["id"])] == [1]  # not a new version
