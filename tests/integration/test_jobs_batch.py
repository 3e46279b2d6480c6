"""Small ingest jobs that run together (pipelines/jobs/batch.py): each keeps its own job, events and outcome."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from core.events import job_stream
from core.redis import get_redis
from tests.support.sse import finish


async def post_one(client, scope: str, content: str, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post("/api/v1/memories", json={"items": [{"content": content}], "user_id": scope},
                             headers=headers)


async def test_a_burst_of_single_memory_posts_gives_each_its_own_succeeded_job_and_searchable_memory(
        client, scope, db):
    texts = [f"burst fact {i} about {uuid.uuid4().hex[:6]}" for i in range(24)]
    responses = await asyncio.gather(*(post_one(client, scope, t) for t in texts))
    assert [r.status_code for r in responses] == [202] * len(texts)
    job_ids = [r.json()["id"] for r in responses]
    assert len(set(job_ids)) == len(texts)
    finals = await asyncio.gather(*(finish(client, j) for j in job_ids))
    assert {f["status"] for f in finals} == {"succeeded"}
    for final in finals:
        assert final["result"]["memories"] == 1 and final["result"]["inserted"] == 1
        assert final["progress"]["done"] == final["progress"]["total"] == 1
    rows = await db("SELECT source_job_id::text, content FROM memories WHERE user_id = :u", u=scope)
    assert sorted((j, t) for j, t in rows) == sorted(zip(job_ids, texts, strict=True))
    hits = (await client.post("/api/v1/memories/search",
                              json={"query": texts[-1], "user_id": scope, "mode": "text", "top_k": 3})).json()["hits"]
    assert hits and hits[0]["memory"]["content"] == texts[-1]
    # Every job announced itself and its outcome on its own stream.
    for job_id in job_ids:
        kinds = [fields["type"] for _, fields in await get_redis().xrange(job_stream(job_id))]
        # `queued` (published by the API once its commit is done) may come after the worker's `started`.
        assert sorted(kinds[:-1]) == ["progress", "queued", "started"] and kinds[-1] == "succeeded", kinds


async def test_replayed_idempotency_keys_in_a_burst_return_the_same_jobs(client, scope, db):
    keys = [f"burst-{uuid.uuid4()}" for _ in range(8)]
    first = await asyncio.gather(*(post_one(client, scope, f"keyed fact {i}", k) for i, k in enumerate(keys)))
    again = await asyncio.gather(*(post_one(client, scope, f"keyed fact {i}", k) for i, k in enumerate(keys)))
    assert [r.json()["id"] for r in first] == [r.json()["id"] for r in again]
    for response in first:
        assert (await finish(client, response.json()["id"]))["status"] == "succeeded"
    [[stored]] = await db("SELECT count(*) FROM memories WHERE user_id = :u", u=scope)
    assert stored == len(keys)


async def test_a_refused_item_fails_its_own_job_and_not_its_neighbours(client, scope, db):
    texts = [f"neighbour fact {i}" for i in range(6)]
    texts.insert(3, "this one the model refuses @@reject@@")
    responses = await asyncio.gather(*(post_one(client, scope, t) for t in texts))
    finals = await asyncio.gather(*(finish(client, r.json()["id"]) for r in responses))
    bad = finals[3]
    assert bad["status"] == "failed" and bad["error"]["code"] == "embedding_rejected"
    good = finals[:3] + finals[4:]
    assert {f["status"] for f in good} == {"succeeded"}
    [[stored]] = await db("SELECT count(*) FROM memories WHERE user_id = :u", u=scope)
    assert stored == len(texts) - 1


async def test_a_shared_transient_failure_retries_each_job_until_it_succeeds(client, scope):
    tag = uuid.uuid4().hex[:8]
    texts = ["steady fact one", f"flaky fact @@fail429:{tag}:1@@", "steady fact two"]
    responses = await asyncio.gather(*(post_one(client, scope, t) for t in texts))
    finals = await asyncio.gather(*(finish(client, r.json()["id"]) for r in responses))
    assert {f["status"] for f in finals} == {"succeeded"}
    assert finals[1]["attempts"] == 2 and finals[1]["error"] is None


async def test_default_quotas_take_an_organizations_agents_writing_one_memory_at_a_time(tenant, stack, db, scope):
    # 1,300 jobs in the last minute: over the old default of 1,200 jobs per minute, which answered 429.
    await db("INSERT INTO jobs (id, org_id, kind, status, payload, progress_total, created_at, updated_at) "
             "SELECT gen_random_uuid(), :o, 'ingest_memories', 'succeeded', '{}'::jsonb, 1, now(), now() "
             "FROM generate_series(1, 1300)", o=tenant.org_id)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as owner:
        responses = await asyncio.gather(*(post_one(owner, scope, f"agent {i} learned something") for i in range(8)))
        assert [r.status_code for r in responses] == [202] * 8
        for response in responses:
            assert (await finish(owner, response.json()["id"]))["status"] == "succeeded"
