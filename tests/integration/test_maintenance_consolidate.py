"""`consolidate`: near duplicates of one scope merge into the oldest, with history naming both sides; a fact that
says something else (a negation, another scope) stays; with an LLM the merged text is the LLM's."""

from __future__ import annotations

import json

import httpx

from schemas.permissions import Role
from tests.support.maintenance import memory_history, run_task
from tests.support.sse import finish


async def _ingest_one_by_one(client, texts: list[str], **scope) -> list[str]:
    """Store each text in its own job, in order, so `created_at` follows the list; their ids in the same order."""
    ids = []
    for text in texts:
        response = await client.post("/api/v1/memories", json={"items": [{"content": text}], **scope})
        assert response.status_code == 202, response.text
        job = await finish(client, response.json()["id"])
        assert job["status"] == "succeeded", job
        ids.append(job["result"]["first_memory_id"])
    return ids


async def test_offline_consolidation_merges_what_adds_nothing_into_the_oldest(owner, scope, db):
    oldest, longer, same, negated = await _ingest_one_by_one(owner, [
        "The user's dog is called Rex", "The user's dog is called Rex and he is a beagle",
        "the user's dog is called Rex.", "The user's dog is not called Rex"], user_id=scope)
    [elsewhere] = await _ingest_one_by_one(owner, ["The user's dog is called Rex"], user_id=scope + "-other")

    result = await run_task(owner, "consolidate", {"similarity": 0.8})
    assert result["mode"] == "offline"
    [merge] = result["merges"]
    assert merge["into"] == oldest and set(merge["merged_from"]) == {longer, same} and result["merged"] == 2
    # The oldest keeps its id and takes the text that says it all; its new version names what it absorbed.
    survivor = (await owner.get(f"/api/v1/memories/{oldest}")).json()
    assert survivor["content"] == "The user's dog is called Rex and he is a beagle"
    assert survivor["embedding_status"] == "ready"
    last = (await memory_history(owner, oldest))[-1]
    assert last["event"] == "UPDATE" and set(last["metadata"]["merged_from"]) == {longer, same}
    assert last["metadata"]["source"] == "consolidate"
    for gone in (longer, same):
        assert (await owner.get(f"/api/v1/memories/{gone}")).status_code == 404
        final = (await memory_history(owner, gone))[-1]
        assert final["event"] == "DELETE" and final["metadata"]["merged_into"] == oldest
    # A negation and another scope's copy stay; search finds one dog memory, not three.
    for kept in (negated, elsewhere):
        assert (await owner.get(f"/api/v1/memories/{kept}")).status_code == 200
    hits = (await owner.post("/api/v1/memories/search", json={"query": "dog Rex beagle", "user_id": scope})).json()
    assert sorted(h["memory"]["id"] for h in hits["hits"]) == sorted([oldest, negated])
    [row] = await db("SELECT embedded_hash = content_hash AS fresh FROM memories WHERE id = CAST(:i AS uuid)", i=oldest)
    assert row.fresh

    # Idempotent: nothing is left to merge.
    again = await run_task(owner, "consolidate", {"similarity": 0.8})
    assert again["merged"] == 0 and again["merges"] == []


async def test_with_an_llm_the_merged_text_is_the_llms(llm_tenant, as_role, scope, stack):
    owner = as_role(Role.OWNER, of=llm_tenant)
    marker = f"zebra{scope[-8:]}"
    first, second = await _ingest_one_by_one(owner, [f"Bob owns a {marker}", f"Bob owns a {marker} called Ziggy"],
                                             user_id=scope)
    merged_text = f"Bob owns a {marker} named Ziggy"
    async with httpx.AsyncClient(base_url=stack.model_url) as model:
        scripted = await model.post("/scripts", json={"marker": marker,
                                                      "responses": [{"content": json.dumps({"text": merged_text})}]})
        assert scripted.status_code == 200
    result = await run_task(owner, "consolidate", {"similarity": 0.8})
    assert result["mode"] == "llm" and result["merges"] == [{"into": first, "merged_from": [second]}]
    assert (await owner.get(f"/api/v1/memories/{first}")).json()["content"] == merged_text
    assert (await owner.get(f"/api/v1/memories/{second}")).status_code == 404
    # The LLM's default answer here is `{}` (text null): the memories would have stayed apart.
