"""Memories end to end through the real API, broker, workers, PostgreSQL + pgvector and Redis."""

from __future__ import annotations

from tests.support.sse import finish, follow

FACTS = [
    "My sister Alice moved to Lisbon last spring and works as a marine biologist.",
    "I am allergic to peanuts, so restaurants must avoid them in my food.",
    "Our team ships the mobile app release every second Thursday.",
    "The user's favourite film is Spirited Away by Hayao Miyazaki.",
    "I keep my passport in the top drawer of the blue desk.",
]


async def ingest(client, items, scope, **extra):
    response = await client.post("/api/v1/memories", json={"items": items, "user_id": scope, **extra})
    assert response.status_code == 202, response.text
    return response.json()


async def test_ingest_streams_progress_to_success_and_search_finds_a_paraphrase(client, scope, db):
    job = await ingest(client, [{"content": f, "metadata": {"n": i}} for i, f in enumerate(FACTS)], scope)
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 5, "message": None}

    # From the stream's start: a small job can finish before the follow connects.
    events = await follow(client, job["id"], last_event_id="0-0")
    kinds = [e.event for e in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "succeeded", kinds
    assert "progress" in kinds
    ids = [e.id for e in events if e.id]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    assert events[-1].data["data"]["result"]["memories"] == 5

    [[stored]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j AND embedding IS NOT NULL",
                          j=job["id"])
    assert stored == 5

    response = await client.post("/api/v1/memories/search",
                                 json={"query": "Which food allergy do I have?", "user_id": scope, "top_k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["memory"]["content"] == FACTS[1]
    assert hits[0]["score"] > hits[1]["score"]
    assert all(h["memory"]["user_id"] == scope for h in hits)


async def test_search_filters_by_scope_metadata_and_min_score(client, scope):
    other = scope + "-other"
    job_a = await ingest(client, [{"content": "I love hiking in the Dolomites", "metadata": {"kind": "hobby"}},
                                  {"content": "Hiking boots size 44", "metadata": {"kind": "gear"}}], scope)
    job_b = await ingest(client, [{"content": "I love hiking in the Dolomites"}], other)
    assert (await finish(client, job_a["id"]))["status"] == "succeeded"
    assert (await finish(client, job_b["id"]))["status"] == "succeeded"

    scoped = (await client.post("/api/v1/memories/search", json={"query": "mountain walks", "user_id": scope})).json()
    assert {h["memory"]["user_id"] for h in scoped["hits"]} == {scope}
    assert len(scoped["hits"]) == 2

    gear = (await client.post("/api/v1/memories/search",
                              json={"query": "mountain walks", "user_id": scope, "metadata": {"kind": "gear"}})).json()
    assert [h["memory"]["content"] for h in gear["hits"]] == ["Hiking boots size 44"]

    # min_score applies to the mode's score: cosine similarity in vector mode.
    loose = (await client.post("/api/v1/memories/search",
                               json={"query": "mountain walks", "user_id": scope, "mode": "vector",
                                     "min_score": 0.1})).json()
    assert loose["hits"] and all(h["score"] >= 0.1 for h in loose["hits"])
    strict = (await client.post("/api/v1/memories/search",
                                json={"query": "mountain walks", "user_id": scope, "mode": "vector",
                                      "min_score": 0.99})).json()
    assert strict["hits"] == []


async def test_read_list_update_and_delete_a_memory(client, scope):
    job = await ingest(client, [{"content": f} for f in FACTS], scope)
    done = await finish(client, job["id"])
    first_id = done["result"]["first_memory_id"]

    memory = (await client.get(f"/api/v1/memories/{first_id}")).json()
    assert memory["content"] == FACTS[0] and memory["embedding_status"] == "ready"

    page1 = (await client.get("/api/v1/memories", params={"user_id": scope, "limit": 3})).json()
    page2 = (await client.get("/api/v1/memories", params={"user_id": scope, "limit": 3,
                                                          "cursor": page1["next_cursor"]})).json()
    assert len(page1["items"]) == 3 and len(page2["items"]) == 2 and page2["next_cursor"] is None
    seen = [m["id"] for m in page1["items"] + page2["items"]]
    assert len(set(seen)) == 5

    # Metadata only: no job, nothing to re-embed.
    meta_only = (await client.patch(f"/api/v1/memories/{first_id}", json={"metadata": {"city": "Lisbon"}})).json()
    assert meta_only["job"] is None and meta_only["memory"]["metadata"] == {"city": "Lisbon"}

    # Content change: re-embedded by a job, then search by the new meaning finds it.
    new_text = "Alice now lives in Tokyo and teaches mathematics at a university."
    changed = (await client.patch(f"/api/v1/memories/{first_id}", json={"content": new_text})).json()
    assert changed["memory"]["embedding_status"] == "pending"
    assert (await finish(client, changed["job"]["id"]))["status"] == "succeeded"
    assert (await client.get(f"/api/v1/memories/{first_id}")).json()["embedding_status"] == "ready"
    hits = (await client.post("/api/v1/memories/search", json={"query": "Who teaches maths in Japan?",
                                                               "user_id": scope, "top_k": 1})).json()["hits"]
    assert hits[0]["memory"]["id"] == first_id

    assert (await client.delete(f"/api/v1/memories/{first_id}")).status_code == 204
    missing = await client.get(f"/api/v1/memories/{first_id}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    after = (await client.post("/api/v1/memories/search", json={"query": "Who teaches maths in Japan?",
                                                                "user_id": scope})).json()["hits"]
    assert first_id not in {h["memory"]["id"] for h in after}
    listed = (await client.get("/api/v1/memories", params={"user_id": scope})).json()["items"]
    assert first_id not in {m["id"] for m in listed} and len(listed) == 4


async def test_many_small_requests_are_embedded_in_shared_batches(client, stack, scope):
    import asyncio

    import httpx

    jobs = await asyncio.gather(*[ingest(client, [{"content": f"{scope} small request {i} item {k}"}
                                                  for k in range(2)], scope) for i in range(24)])
    results = await asyncio.gather(*[finish(client, j["id"]) for j in jobs])
    assert all(r["status"] == "succeeded" for r in results)
    async with httpx.AsyncClient() as plain:
        mine = (await plain.get(stack.model_url + "/stats", params={"contains": scope})).json()
    texts, calls = mine["embedded_texts"], mine["embedding_requests"]
    assert texts == 48
    # 24 jobs of 2 texts each: coalescing across jobs in a worker means fewer model calls than jobs.
    assert calls < 24, f"{calls} embedding calls for 24 jobs"
