"""A switch to an embedding model of another dimension, online: `reembed` moves the old vectors aside, fills a
column of the new dimension while search keeps finding every memory by meaning, and drops the old vectors once
nothing is left to move; a switch cut short is resumed, and a second run changes nothing.

The switch changes the tables' columns, so it runs on a database of its own (on the session's server) with a
Redis database of its own, through stacks of its own: the other tests keep their 384 dimensions.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import embedding_columns
from core.db import autocommit_scope, database_url, dispose_engine, session_scope, set_database_url
from core.errors import TransientJobError
from core.migrate import upgrade_database
from tests.support.maintenance import run_task, seed
from tests.support.sse import finish
from tests.support.stack import Stack
from tests.support.tenants import make_tenant

OLD_MODEL, NEW_MODEL = "all-MiniLM-L6-v2", "doubled-minilm"  # the tests' model server: 384 and 768 dimensions
FACTS = [f"fact {n}: " + t for n, t in enumerate([
    "the lighthouse keeper paints boats in winter", "our cat sleeps on the piano", "the bakery opens at six",
    "my sister studies volcanoes in Iceland", "the train to Lyon was delayed by snow", "we grow tomatoes on the roof",
    "the chess club meets on Thursdays", "grandfather repaired clocks for fifty years",
    "the marathon route passes the old harbour", "she learned Portuguese from radio plays",
])]
QUERIES = [(q, FACTS[n]) for q, n in (("volcanoes in Iceland", 3), ("someone who fixed watches", 7),
                                     ("cat on a musical instrument", 1), ("running race by the sea port", 8),
                                     ("vegetables on top of the building", 5), ("board game evenings", 6))]
# Long enough to be split into passages (AGENTMEM_PASSAGE_EMBEDDING is on in the tests' stacks).
LONG = " ".join(["The harbour master keeps a logbook of every ship that enters the bay."] * 40
                + ["At the very end he notes that the red ferry carries bicycles on Sundays."])

PASSAGE_QUERY = "bicycles on the ferry on Sundays"  # found in the long memory's last passage only
WRITTEN = "the violin teacher moved to Vienna"  # a memory written during the switch


def _doubled(vector: list[float]) -> list[float]:
    """The new model's vector for a text, from the old one's (as the tests' model server makes it)."""
    return [x * 0.5 ** 0.5 for x in vector + vector]


async def _sql(sql: str, **params):
    async with session_scope() as session:
        result = await session.execute(text(sql), params)
        rows = result.all() if result.returns_rows else []
        await session.commit()
        return rows


def _start(services, **env) -> Stack:
    stack = Stack(services, Path(tempfile.mkdtemp(prefix="agentmem-test-dimswap-", dir="/tmp")))
    try:
        stack.start(workers=1, extra_env=env)
    except Exception:
        print(stack.logs())
        stack.stop()
        raise
    return stack


@pytest.fixture
async def own_services(services):
    """A fresh database and Redis database on the session's servers, this process pointed at them meanwhile."""
    original = database_url()
    name = f"dimswap_{uuid.uuid4().hex[:8]}"
    async with autocommit_scope() as session:
        await session.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(original).set(database=name).render_as_string(hide_password=False)
    await dispose_engine()
    set_database_url(url)
    await asyncio.to_thread(upgrade_database)
    redis = services.redis_url.rsplit("/", 1)[0] + "/7"
    yield replace(services, database_url=url, redis_url=redis, postgres=None, valkey=None)
    await dispose_engine()
    set_database_url(original)


async def _search(client, scope: str, query: str, mode: str = "vector", passages: bool = False) -> list[str]:
    response = await client.post("/api/v1/memories/search", json={"query": query, "user_id": scope, "mode": mode,
                                                                   "top_k": 3, "passages": passages})
    assert response.status_code == 200, response.text
    return [h["memory"]["content"] for h in response.json()["hits"]]




async def _columns() -> dict[str, embedding_columns.ColumnState]:
    return await embedding_columns.states()


async def test_a_switch_to_another_dimension_runs_online_and_resumes(own_services):
    scope = f"test-{uuid.uuid4().hex[:12]}"
    tenant, other = await make_tenant("dimswap"), await make_tenant("dimswap-other")
    old = _start(own_services)
    try:
        async with httpx.AsyncClient(base_url=old.api_url, headers=tenant.headers(), timeout=60) as client:
            await seed(client, scope, [*FACTS, LONG])
            agent = (await client.post("/api/v1/agents", json={"name": "a"})).json()
            conversation = (await client.post(f"/api/v1/agents/{agent['id']}/conversations",
                                              json={"title": "t"})).json()
            posted = await client.post(f"/api/v1/conversations/{conversation['id']}/messages",
                                       json={"content": "remember the blue door", "respond": False})
            assert posted.status_code in (200, 201, 202), posted.text
            assert (await run_task(client, "reembed"))["messages_reembedded"] == 1  # the message has its 384-d vector
        async with httpx.AsyncClient(base_url=old.api_url, headers=other.headers(), timeout=60) as client:
            await seed(client, "someone-else", ["the other organization's only memory, about sailing"])
    finally:
        old.stop()
    rows = await _sql("SELECT id, content, embedding::real[] AS embedding FROM memories WHERE user_id = :u", u=scope)
    before = {r.id: list(r.embedding) for r in rows}
    assert len(before) == len(FACTS) + 1 and all(len(v) == 384 for v in before.values())
    assert (await _sql("SELECT count(*) AS n FROM memory_passages"))[0].n > 0

    new = _start(own_services, AGENTMEM_EMBEDDING_MODEL=NEW_MODEL, AGENTMEM_EMBEDDING_DIM="768",
                 AGENTMEM_EMBEDDING_PREVIOUS_MODEL=OLD_MODEL)
    try:
        async with httpx.AsyncClient(base_url=new.api_url, headers=tenant.headers(), timeout=60) as client:
            # Configured for 768, the columns still 384: the query by the old model finds every memory.
            for query, fact in QUERIES:
                assert (await _search(client, scope, query))[0] == fact

            # A long transaction reading the table: the switch does not queue every reader behind it, it gives
            # up (the job retries) and has changed nothing.
            async with session_scope() as reader:
                await reader.execute(text("SELECT count(*) FROM memories"))
                with pytest.raises(TransientJobError) as busy:
                    await embedding_columns.begin(768)
                assert busy.value.code == "embedding_switch_busy"
            assert not (await _columns())["memories"].switching

            # A switch cut short: begun by `agentmem migrate` (the old vectors aside, an empty 768-d column), its
            # index build lost in a crash, and half the memories moved.
            for _ in range(2):  # the second time finds it done
                migrated = new.run("migrate")
                assert migrated.returncode == 0, migrated.stderr
                assert "switching the embedding columns to 768 dimensions" in migrated.stdout
            await _sql("DROP INDEX ix_memories_embedding")
            assert {t: (s.dim, s.prev_dim) for t, s in (await _columns()).items()} == {
                t: (768, 384) for t in embedding_columns.TABLES}
            # Both vector columns of each table keep their vectors in the row (migration 0017).
            storage = await _sql("SELECT attrelid::regclass::text AS tbl, attname, attstorage::text AS storage "
                                 "FROM pg_attribute WHERE atttypid = CAST('vector' AS regtype) AND NOT attisdropped "
                                 "AND attrelid::regclass::text = ANY(:tables)", tables=list(embedding_columns.TABLES))
            assert {(r.tbl, r.attname): r.storage for r in storage} == {
                (t, c): "m" for t in embedding_columns.TABLES for c in ("embedding", "embedding_prev")}
            moved = sorted(r.id for r in rows if r.content in FACTS)[:len(FACTS) // 2]  # the long one has passages
            for memory_id in moved:
                await _sql("UPDATE memories SET embedding = CAST(:v AS vector), embedding_model = :m WHERE id = :i",
                           v=str(_doubled(before[memory_id])), m=NEW_MODEL, i=memory_id)
            # Found by meaning whichever column it is in (hybrid and vector), and a memory written meanwhile
            # gets its 768-d vector at once.
            for query, fact in QUERIES:
                assert (await _search(client, scope, query))[0] == fact
                assert (await _search(client, scope, query, "hybrid"))[0] == fact
            assert LONG in await _search(client, scope, PASSAGE_QUERY, passages=True)  # its passages aside too
            await seed(client, scope, [WRITTEN])
            [written] = await _sql("SELECT vector_dims(embedding) AS d, embedding_model FROM memories "
                                   "WHERE content = :c", c=WRITTEN)
            assert (written.d, written.embedding_model) == (768, NEW_MODEL)
            assert (await _search(client, scope, "music lessons teacher relocated to Austria"))[0] == WRITTEN

            # The run fills what is left, searched throughout; the other organization has not run it yet.
            started = await client.post("/api/v1/maintenance/reembed", json={"params": {"batch_size": 2}})
            assert started.status_code == 202, started.text
            job_id, searches = started.json()["id"], 0
            while True:
                assert (await _search(client, scope, "someone who fixed watches"))[0] == FACTS[7]
                assert (await _search(client, scope, "chess club Thursdays", "hybrid"))[0] == FACTS[6]
                searches += 1
                if (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"] not in ("queued", "running"):
                    break
            job = await finish(client, job_id)
            assert job["status"] == "succeeded", job
            result = job["result"]
            assert (result["pending"], result["reembedded"], result["remaining"], result["messages_reembedded"]) == (
                len(before) - len(moved), len(before) - len(moved), 0, 1)
            assert result["dimension_switch"] == {"from_dim": 384, "to_dim": 768, "state": "filling",
                                                  "waiting_for": 1}
            assert searches >= 1
            assert (await _columns())["memories"].switching
            [index] = await _sql("SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                                 "WHERE c.relname = 'ix_memories_embedding'")
            assert index.indisvalid  # rebuilt after the "crash"

        async with httpx.AsyncClient(base_url=new.api_url, headers=other.headers(), timeout=60) as client:
            # The last organization's run leaves nothing to move: the old vectors go.
            last = await run_task(client, "reembed")
            assert last["dimension_switch"] == {"from_dim": 384, "to_dim": 768, "state": "finished",
                                                "waiting_for": 0}
        assert {t: (s.dim, s.prev_dim) for t, s in (await _columns()).items()} == {
            t: (768, None) for t in embedding_columns.TABLES}
        after = {r.id: (list(r.embedding), r.embedding_model) for r in await _sql(
            "SELECT id, embedding::real[] AS embedding, embedding_model FROM memories WHERE user_id = :u", u=scope)}
        for memory_id, vector in before.items():
            assert after[memory_id][1] == NEW_MODEL
            assert after[memory_id][0] == pytest.approx(_doubled(vector), abs=1e-5)
        [passages] = await _sql("SELECT count(*) AS n, count(*) FILTER (WHERE vector_dims(embedding) = 768 "
                                "AND embedding_model = :m) AS moved FROM memory_passages", m=NEW_MODEL)
        assert passages.n > 0 and passages.moved == passages.n
        [nullable] = await _sql("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'memory_passages'::regclass "
                                "AND attname = 'embedding'")
        assert nullable.attnotnull
        [message] = await _sql("SELECT vector_dims(embedding) AS d, embedding_model FROM messages "
                               "WHERE conversation_id = CAST(:c AS uuid)", c=conversation["id"])
        assert (message.d, message.embedding_model) == (768, NEW_MODEL)

        async with httpx.AsyncClient(base_url=new.api_url, headers=tenant.headers(), timeout=60) as client:
            for query, fact in QUERIES:  # the new model's query alone now (the previous one has no column left)
                assert (await _search(client, scope, query))[0] == fact
            assert LONG in await _search(client, scope, PASSAGE_QUERY, passages=True)
            again = await run_task(client, "reembed")
            assert (again["pending"], again["reembedded"], again["messages_reembedded"]) == (0, 0, 0)
            assert "dimension_switch" not in again

            # A switch begun by mistake (back to 384) and undone: the 768-d vectors come back as they were; one
            # memory moved meanwhile is marked for `reembed` (its content may have changed), the rest are intact.
            assert await embedding_columns.begin(384)
            await _sql("UPDATE memories SET embedding = CAST(:v AS vector), embedding_model = :m WHERE id = :i",
                       v=str(before[moved[0]]), m=OLD_MODEL, i=moved[0])
            assert not await embedding_columns.begin(768)
            assert {t: (s.dim, s.prev_dim) for t, s in (await _columns()).items()} == {
                t: (768, None) for t in embedding_columns.TABLES}
            restored = {r.id: (list(r.embedding), r.embedding_model) for r in await _sql(
                "SELECT id, embedding::real[] AS embedding, embedding_model FROM memories WHERE user_id = :u",
                u=scope)}
            assert restored == after
            for query, fact in QUERIES:
                assert (await _search(client, scope, query))[0] == fact
            undone = await run_task(client, "reembed")
            assert (undone["pending"], undone["reembedded"]) == (1, 1) and "dimension_switch" not in undone
    except Exception:
        print(new.logs())
        raise
    finally:
        new.stop()
