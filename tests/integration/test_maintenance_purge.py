"""Memories that expire, and `purge`: expired memories leave reads at once; deleted rows go for good after the
organization's retention, with everything that hangs off them, and a second run changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.support.maintenance import memory_history, run_task
from tests.support.sse import finish


async def _ingest(client, items: list[dict], **batch) -> list[str]:
    response = await client.post("/api/v1/memories", json={"items": items, **batch})
    assert response.status_code == 202, response.text
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    listed = (await client.get("/api/v1/memories", params={"limit": 500, **batch})).json()["items"]
    return [m["id"] for m in listed]


async def test_an_expired_memory_is_gone_from_reads_and_search_at_once(owner, scope, db):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    kept = await _ingest(owner, [{"content": "the ferry to Staffa leaves at nine", "expires_at": future},
                                 {"content": "the ferry to Iona leaves at ten", "expires_at": past}], user_id=scope)
    assert len(kept) == 1, "the memory stored already expired is not listed"
    memory = (await owner.get(f"/api/v1/memories/{kept[0]}")).json()
    assert memory["expires_at"].startswith(future[:16].replace("+00:00", ""))
    [expired] = await db("SELECT id FROM memories WHERE user_id = :u AND content LIKE '%Iona%'", u=scope)
    assert (await owner.get(f"/api/v1/memories/{expired.id}")).status_code == 404
    search = await owner.post("/api/v1/memories/search", json={"query": "ferry Iona", "user_id": scope})
    assert [h["memory"]["id"] for h in search.json()["hits"]] == [kept[0]]
    # Moving the expiry into the past hides it at once; null would have kept it for good.
    assert (await owner.patch(f"/api/v1/memories/{kept[0]}", json={"expires_at": past})).status_code == 200
    assert (await owner.get(f"/api/v1/memories/{kept[0]}")).status_code == 404
    search = await owner.post("/api/v1/memories/search", json={"query": "ferry", "user_id": scope, "mode": "vector"})
    assert search.json()["hits"] == []


async def test_clearing_expires_at_keeps_a_memory(owner, scope):
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    [memory_id] = await _ingest(owner, [{"content": "a passing thought", "expires_at": soon}], user_id=scope)
    response = await owner.patch(f"/api/v1/memories/{memory_id}", json={"expires_at": None})
    assert response.status_code == 200 and response.json()["memory"]["expires_at"] is None


async def test_purge_expires_then_deletes_for_good_after_the_retention(owner, tenant, scope, db):
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    ids = await _ingest(owner, [{"content": "keep me: the boiler code is 4411"},
                                {"content": "delete me: the old wifi password"}], user_id=scope)
    by_text = {(await owner.get(f"/api/v1/memories/{i}")).json()["content"][:7]: i for i in ids}
    live, deleted = by_text["keep me"], by_text["delete "]
    await _ingest(owner, [{"content": "expire me: the parcel code", "expires_at": past}], user_id=scope)
    [expired] = [r.id for r in await db("SELECT id FROM memories WHERE user_id = :u AND content LIKE 'expire%'",
                                        u=scope)]
    assert (await owner.delete(f"/api/v1/memories/{deleted}")).status_code == 204
    block = (await owner.post("/api/v1/blocks", json={"label": f"b-{scope}", "value": "v1"})).json()
    assert (await owner.patch(f"/api/v1/blocks/{block['id']}", json={"value": "v2"})).status_code == 200
    agent = (await owner.post("/api/v1/agents", json={"name": f"a-{scope}"})).json()
    assert (await owner.post(f"/api/v1/agents/{agent['id']}/blocks/{block['id']}")).status_code in (200, 201, 204)
    conversation = (await owner.post(f"/api/v1/agents/{agent['id']}/conversations", json={"title": "t"})).json()
    posted = await owner.post(f"/api/v1/conversations/{conversation['id']}/messages",
                              json={"content": "hello", "respond": False})
    assert posted.status_code in (200, 201, 202), posted.text
    for path in (f"/api/v1/blocks/{block['id']}", f"/api/v1/conversations/{conversation['id']}",
                 f"/api/v1/agents/{agent['id']}"):
        assert (await owner.delete(path)).status_code == 204, path

    # Within the retention (30 days by default): the expired memory is deleted as of its expiry, nothing is purged.
    first = await run_task(owner, "purge")
    assert first["retention_days"] == 30
    assert first["purged"] == {"expired_memories": 1, "memories": 0, "blocks": 0, "conversations": 0, "agents": 0}
    last = (await memory_history(owner, str(expired)))[-1]
    assert last["event"] == "DELETE" and last["metadata"]["reason"] == "expired"
    [row] = await db("SELECT deleted_at FROM memories WHERE id = :i", i=expired)
    assert abs((row.deleted_at - datetime.fromisoformat(past)).total_seconds()) < 1

    # The organization keeps deleted rows for 0 days: the next run removes them and what hangs off them.
    await db("UPDATE organizations SET limits = limits || CAST(:l AS jsonb) WHERE id = :o",
             l=json.dumps({"purge_after_days": 0}), o=tenant.org_id)
    second = await run_task(owner, "purge")
    assert second["retention_days"] == 0
    assert second["purged"] == {"expired_memories": 0, "memories": 2, "blocks": 1, "conversations": 1, "agents": 1}
    for table, column, value in (("memories", "id", deleted), ("memories", "id", expired),
                                 ("memory_history", "memory_id", deleted), ("memory_passages", "memory_id", deleted),
                                 ("blocks", "id", block["id"]), ("block_versions", "block_id", block["id"]),
                                 ("agent_blocks", "block_id", block["id"]), ("agents", "id", agent["id"]),
                                 ("conversations", "id", conversation["id"]),
                                 ("messages", "conversation_id", conversation["id"])):
        rows = await db(f"SELECT 1 FROM {table} WHERE {column} = CAST(:v AS uuid)", v=str(value))
        assert rows == [], f"{table} still holds {value}"
    # The live memory and its history are untouched; a third run finds nothing to do.
    assert (await owner.get(f"/api/v1/memories/{live}")).status_code == 200
    assert [h["event"] for h in await memory_history(owner, live)] == ["ADD"]
    third = await run_task(owner, "purge")
    assert set(third["purged"].values()) == {0}
