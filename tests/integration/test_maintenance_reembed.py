"""`reembed`: missing, stale and other models' vectors are replaced in batches; a model change followed by
`reembed` moves every vector while search keeps answering, and a second run has nothing to do."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.maintenance import run_task, seed
from tests.support.sse import finish
from tests.support.stack import Stack

NEW_MODEL = "reversed-minilm"  # the tests' model server gives it the same vectors reversed: another model's
FACTS = [f"fact {n}: " + text for n, text in enumerate([
    "the lighthouse keeper paints boats in winter", "our cat sleeps on the piano", "the bakery opens at six",
    "my sister studies volcanoes in Iceland", "the train to Lyon was delayed by snow", "we grow tomatoes on the roof",
    "the chess club meets on Thursdays", "grandfather repaired clocks for fifty years",
    "the marathon route passes the old harbour", "she learned Portuguese from radio plays",
])]
QUERIES = [(q, FACTS[n]) for q, n in (("volcanoes in Iceland", 3), ("someone who fixed watches", 7),
                                     ("cat on a musical instrument", 1), ("running race by the sea port", 8),
                                     ("vegetables on top of the building", 5), ("board game evenings", 6))]




async def test_reembed_fills_missing_stale_and_other_models_vectors(owner, scope, db):
    await seed(owner, scope, FACTS)
    rows = await db("SELECT id FROM memories WHERE user_id = :u ORDER BY id", u=scope)
    missing, stale, other = (r.id for r in rows[:3])
    await db("UPDATE memories SET embedding = NULL, embedded_hash = NULL, embedding_model = NULL WHERE id = :i",
             i=missing)
    await db("UPDATE memories SET embedded_hash = 'older content' WHERE id = :i", i=stale)
    await db("UPDATE memories SET embedding_model = 'some-old-model' WHERE id = :i", i=other)
    # A message posted without a turn has no vector yet (turns embed theirs afterwards): reembed gives it one.
    agent = (await owner.post("/api/v1/agents", json={"name": f"a-{scope}"})).json()
    conversation = (await owner.post(f"/api/v1/agents/{agent['id']}/conversations", json={"title": "t"})).json()
    posted = await owner.post(f"/api/v1/conversations/{conversation['id']}/messages",
                              json={"content": "remember the blue door", "respond": False})
    assert posted.status_code in (200, 201, 202), posted.text
    integrity = await finish(owner, (await owner.post("/api/v1/maintenance/integrity")).json()["id"])
    counts = integrity["result"]["counts"]
    assert (counts["memories_without_embedding"], counts["memories_with_stale_embedding"],
            counts["memories_embedded_by_another_model"]) == (1, 1, 1)

    result = await run_task(owner, "reembed", {"batch_size": 2})
    assert result["model"] == "all-MiniLM-L6-v2"
    assert (result["pending"], result["reembedded"], result["failed"], result["remaining"]) == (3, 3, 0, 0)
    assert result["messages_reembedded"] == 1
    [message] = await db("SELECT embedding IS NOT NULL AS embedded, embedding_model FROM messages "
                         "WHERE conversation_id = CAST(:c AS uuid)", c=conversation["id"])
    assert message.embedded and message.embedding_model == "all-MiniLM-L6-v2"
    fresh = await db("SELECT count(*) AS n FROM memories WHERE user_id = :u AND embedding IS NOT NULL "
                     "AND embedded_hash = content_hash AND embedding_model = 'all-MiniLM-L6-v2'", u=scope)
    assert fresh[0].n == len(FACTS)
    again = await run_task(owner, "reembed")
    assert (again["pending"], again["reembedded"], again["messages_reembedded"]) == (0, 0, 0)
    integrity = await finish(owner, (await owner.post("/api/v1/maintenance/integrity")).json()["id"])
    assert integrity["result"]["healthy"] is True


@pytest.fixture
def paused_workers(stack):
    """The main stack's workers stopped, so another configuration's workers take the jobs; restarted after."""
    # Only the live ones: a worker killed by an earlier test stays listed (for its log) and stays dead.
    names = [name for name, proc in stack.procs.items() if name.startswith("worker-") and proc.popen.poll() is None]
    for name in names:
        stack.procs[name].stop()
    yield
    for name in names:
        stack.start_worker(name)


@pytest.fixture
def switched_stack(services, paused_workers):
    """An API and a worker switched to another embedding model (same dimension), on the same data: the
    documented procedure, with the model the stored vectors were made with as the previous one."""
    other = Stack(services, Path(tempfile.mkdtemp(prefix="agentmem-test-reembed-", dir="/tmp")))
    try:
        other.start(workers=1, extra_env={"AGENTMEM_EMBEDDING_MODEL": NEW_MODEL,
                                          "AGENTMEM_EMBEDDING_PREVIOUS_MODEL": "all-MiniLM-L6-v2"})
    except Exception:
        print(other.logs())
        other.stop()
        raise
    yield other
    other.stop()


async def _search(client, scope: str, query: str, mode: str) -> list[str]:
    response = await client.post("/api/v1/memories/search", json={"query": query, "user_id": scope, "mode": mode,
                                                                   "top_k": 3})
    assert response.status_code == 200, response.text
    return [h["memory"]["content"] for h in response.json()["hits"]]


async def test_a_model_change_followed_by_reembed_moves_every_vector_and_search_works_throughout(
        owner, tenant, scope, db, request):
    await seed(owner, scope, FACTS)
    before = {r.id: list(r.embedding) for r in await db(
        "SELECT id, embedding::real[] AS embedding FROM memories WHERE user_id = :u", u=scope)}
    other = request.getfixturevalue("switched_stack")
    async with httpx.AsyncClient(base_url=other.api_url, headers=tenant.headers(), timeout=60) as client:
        # Switched, not yet re-embedded: the query is embedded by both models, each compared with its own vectors.
        assert (await _search(client, scope, "volcanoes in Iceland", "hybrid"))[0] == FACTS[3]
        assert (await _search(client, scope, "volcanoes in Iceland", "vector"))[0] == FACTS[3]

        # Half moved, as a run cut short after its first batches leaves them: what is found by meaning is found
        # whichever half it is in.
        moved = sorted(before)[:len(FACTS) // 2]
        for memory_id in moved:
            await db("UPDATE memories SET embedding = CAST(:v AS vector), embedding_model = :m WHERE id = :i",
                     v=str(before[memory_id][::-1]), m=NEW_MODEL, i=memory_id)
        for query, fact in QUERIES:
            assert (await _search(client, scope, query, "vector"))[0] == fact
            assert (await _search(client, scope, query, "hybrid"))[0] == fact

        # The run picks up what is left, searched throughout.
        started = await client.post("/api/v1/maintenance/reembed", json={"params": {"batch_size": 2}})
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        searches = 0
        while True:  # search throughout the run, by words and by meaning, with the vectors half moved
            assert (await _search(client, scope, "chess club Thursdays", "hybrid"))[0] == FACTS[6]
            assert (await _search(client, scope, "someone who fixed watches", "vector"))[0] == FACTS[7]
            searches += 1
            status = (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"]
            if status not in ("queued", "running"):
                break
        job = await finish(client, job_id)
        assert job["status"] == "succeeded", job
        assert (job["result"]["model"], job["result"]["pending"], job["result"]["reembedded"],
                job["result"]["remaining"]) == (NEW_MODEL, len(FACTS) - len(moved), len(FACTS) - len(moved), 0)
        assert searches >= 1

        # Every vector moved: the new model's, which the tests' server gives as the old one reversed.
        after = {r.id: (list(r.embedding), r.embedding_model) for r in await db(
            "SELECT id, embedding::real[] AS embedding, embedding_model FROM memories WHERE user_id = :u", u=scope)}
        assert set(after) == set(before)
        for memory_id, (vector, model) in after.items():
            assert model == NEW_MODEL
            assert vector == pytest.approx(before[memory_id][::-1], abs=1e-6)
        # And search by meaning works as before, now with the new model throughout.
        for query, fact in QUERIES:
            assert (await _search(client, scope, query, "vector"))[0] == fact
        assert (await run_task(client, "reembed"))["pending"] == 0
