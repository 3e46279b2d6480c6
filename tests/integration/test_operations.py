"""Operations: health, readiness, metrics, request ids, and outages answered with 503, never a hang."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from sqlalchemy import text

from core.db import dispose_engine, session_scope
from core.settings import get_settings
from tests.support.metrics import growth, scrape
from tests.support.sse import finish
from tests.support.stack import free_port, wait_http


async def test_health_and_readiness_report_database_redis_and_workers(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["redis"]["ok"] and checks["workers"]["seen"] >= 1


async def test_metrics_expose_latency_jobs_durations_and_queue_depth(client, scope):
    job = (await client.post("/api/v1/memories", json={"items": [{"content": "metric me"}], "user_id": scope})).json()
    await finish(client, job["id"])
    text = (await client.get("/metrics")).text
    assert ('agentmem_http_request_duration_seconds_bucket'
            '{le="0.005",method="POST",route="/api/v1/memories",status="202"}') in text
    assert 'agentmem_jobs{kind="ingest_memories",status="succeeded"}' in text
    assert 'agentmem_job_duration_seconds_count{kind="ingest_memories",status="succeeded"}' in text
    assert 'agentmem_queue_depth{queue="embedding"}' in text


async def test_metrics_count_texts_embedded_per_model_and_each_jobs_wait_in_its_queue(client, scope):
    before = await scrape(client)
    items = [{"content": f"counted text {i}"} for i in range(5)]
    job = (await client.post("/api/v1/memories", json={"items": items, "user_id": scope})).json()
    assert (await finish(client, job["id"]))["status"] == "succeeded"
    after = await scrape(client)
    grew = growth(before, after)
    model = (("model", get_settings().embedding_model),)
    # Other tests' jobs may embed meanwhile: at least this job's texts were counted, in at least one model call.
    assert grew("agentmem_embedded_texts_total", model) >= 5
    assert grew("agentmem_embedding_batches_total", model) >= 1
    assert grew("agentmem_embedding_seconds_total", model) > 0
    embedding = (("queue", "embedding"),)
    assert grew("agentmem_queue_wait_seconds_count", embedding) >= 1
    assert grew("agentmem_queue_wait_seconds_sum", embedding) >= 0
    assert after[("agentmem_queue_wait_seconds_bucket", (("le", "+Inf"), *embedding))] == \
        after[("agentmem_queue_wait_seconds_count", embedding)]
    assert ("agentmem_queue_oldest_message_age_seconds", embedding) in after


async def test_request_id_travels_from_the_request_into_the_job(client, scope):
    response = await client.post("/api/v1/memories", json={"items": [{"content": "trace me"}], "user_id": scope},
                                 headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"
    job = await finish(client, response.json()["id"])
    assert job["request_id"] == "trace-abc-123"


def _api_with(stack, name: str, **overrides: str):
    port = free_port()
    proc = stack.spawn(name, ["-m", "cli.main", "api", "--port", str(port)], env=stack.env | overrides)
    wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
    return proc, f"http://127.0.0.1:{port}"


async def test_database_down_gives_503_database_unavailable_quickly(stack, main_tenant):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/agentmem"
    proc, url = _api_with(stack, "api-db-down", AGENTMEM_DATABASE_URL=dead, AGENTMEM_DB_CONNECT_TIMEOUT_SECONDS="2")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=15, headers=main_tenant.headers()) as c:
            response = await c.get("/api/v1/jobs")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "database_unavailable"
            assert response.headers["retry-after"]
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
    finally:
        proc.stop()


async def test_redis_down_gives_503_redis_unavailable_and_accepted_work_is_kept(stack, db, scope, main_tenant):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    proc, url = _api_with(stack, "api-redis-down", AGENTMEM_REDIS_URL=dead, AGENTMEM_REDIS_TIMEOUT_SECONDS="2")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=15, headers=main_tenant.headers()) as c:
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
            accepted = await c.post("/api/v1/memories", json={"items": [{"content": "kept"}], "user_id": scope})
            # The row is durable before the message: the job is accepted and the scheduler sends it later.
            assert accepted.status_code == 202
            events = await c.get(f"/api/v1/jobs/{accepted.json()['id']}/events")
            assert events.status_code == 503 and events.json()["error"]["code"] == "redis_unavailable"
    finally:
        proc.stop()
    [[status]] = await db("SELECT status FROM jobs WHERE id = :j", j=accepted.json()["id"])
    assert status == "queued"
    await db("UPDATE jobs SET enqueued_at = now() - interval '1 minute' WHERE id = :j", j=accepted.json()["id"])
    assert stack.run("scheduler", "--once").returncode == 0
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, headers=main_tenant.headers()) as c:
        assert (await finish(c, accepted.json()["id"]))["status"] == "succeeded"


async def test_openapi_documents_every_route(client):
    spec = (await client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "AgentMem"
    for path in ("/api/v1/memories", "/api/v1/memories/search", "/api/v1/jobs/{job_id}/events", "/api/v1/jobs"):
        assert path in spec["paths"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description") or operation.get("summary"), f"{method} {path} undocumented"


async def backend_pid() -> int:
    async with session_scope() as session:
        return (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()


async def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout_instead_of_failing(services):
    # No ping on checkout for a connection used recently (core/db.py): a closed socket must still be noticed.
    await dispose_engine()  # this process's pool holds exactly one connection after the next line
    first = await backend_pid()
    admin = await asyncpg.connect(services.database_url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", first)  # as a restart would end it
    finally:
        await admin.close()
    await asyncio.sleep(0.2)  # this event loop reads the end of the pooled connection's socket
    second = await backend_pid()
    assert second != first
    assert await backend_pid() == second  # the new one is pooled and reused
