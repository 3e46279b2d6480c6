"""Faults: a batch of ingest jobs through a worker SIGKILLed and Valkey and PostgreSQL killed and started
again (on the same port, with the same data), with the scheduler running as in production; and a
PostgreSQL that refuses connections while it stops or starts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
import redis

from core.servers import EmbeddedPostgres
from tests.support.stack import Proc, free_port, wait_http

JOBS = 20
ITEMS = [12 + (j % 5) * 4 for j in range(JOBS)]  # 12 to 28 items: 2 to 4 chunks of 8 (AGENTMEM_INGEST_CHUNK_SIZE)


def _content(scope: str, job: int, item: int) -> str:
    # Every chunk asks the model server to be slow, so the faults land while the jobs are running.
    slow = " @@slow:0.5@@" if item % 8 == 0 else ""
    return f"{scope}: job {job} item {item}, the user's note number {job * 100 + item}{slow}"


async def _until(condition, what: str, timeout: float = 90):
    """Poll `condition` (an async callable) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return value


def _revive(services) -> None:
    """Start again a server this test killed if it failed before doing so: one failed test, not every later one."""
    for server, _ in services.servers():
        if not server.alive():
            server.start()


async def _readiness(client, check: str, ok: bool) -> None:
    """Wait until the API's /readyz says the `check` dependency is up (ok) or down."""
    async def seen():
        body = (await client.get("/readyz")).json()
        return body["checks"][check]["ok"] is ok

    await _until(seen, f"/readyz {check} ok={ok}")


async def _non_terminal(db, ids: list[str]) -> int:
    [[count]] = await db("SELECT count(*) FROM jobs WHERE id = ANY(CAST(:ids AS uuid[])) "
                         "AND status NOT IN ('succeeded', 'failed', 'cancelled')", ids=ids)
    return count


async def test_twenty_ingest_jobs_survive_a_killed_worker_valkey_and_postgres(client, stack, services, db, scope):
    if services.postgres is None or services.valkey is None:
        pytest.skip("needs the embedded servers (AGENTMEM_TEST_*_URL servers can't be killed from here)")
    scheduler: Proc = stack.spawn("scheduler-faults", ["-m", "cli.main", "scheduler"],
                                  env=stack.env | {"AGENTMEM_SCHEDULER_INTERVAL_SECONDS": "0.5"})
    expected = {(j, i): _content(scope, j, i) for j, n in enumerate(ITEMS) for i in range(n)}
    in_flight = {}
    try:
        submitted = await asyncio.gather(*(
            client.post("/api/v1/memories", json={"user_id": scope, "items": [
                {"content": expected[(j, i)]} for i in range(n)]}) for j, n in enumerate(ITEMS)))
        assert [r.status_code for r in submitted] == [202] * JOBS, [r.text for r in submitted]
        ids = [r.json()["id"] for r in submitted]

        # 1. A worker process SIGKILLed in the middle of a job: no ack, no lease released.
        async def mid_job():
            return await db("SELECT worker FROM jobs WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running' "
                            "AND progress_done > 0 AND progress_done < progress_total LIMIT 1", ids=ids)

        [[worker]] = await _until(mid_job, "a job half done")
        victim_pid = int(worker.rsplit(":", 1)[1])
        victim = next(name for name, proc in stack.procs.items() if name.startswith("worker")
                      and proc.popen.poll() is None
                      and victim_pid in [c.pid for c in psutil.Process(proc.popen.pid).children(recursive=True)])
        in_flight["worker"] = await _non_terminal(db, ids)
        os.kill(victim_pid, signal.SIGKILL)
        stack.procs[victim].popen.wait(timeout=30)  # Dramatiq's main process stops once its child is gone
        stack.start_worker(f"{victim}-after-faults")

        # 2. Valkey killed, started again once the API has noticed it gone.
        in_flight["valkey"] = await _non_terminal(db, ids)
        valkey_port = services.valkey.port
        services.kill(services.valkey)
        await _readiness(client, "redis", ok=False)
        services.valkey.start()
        assert services.valkey.port == valkey_port
        await _readiness(client, "redis", ok=True)

        # 3. PostgreSQL killed, started again once the API has noticed it gone.
        in_flight["postgres"] = await _non_terminal(db, ids)
        postgres_port = services.postgres.port
        services.kill(services.postgres)
        await _readiness(client, "database", ok=False)
        services.postgres.start()
        assert services.postgres.port == postgres_port
        await _readiness(client, "database", ok=True)

        await _until(lambda: _until_done(db, ids), "every job to finish", timeout=180)
    finally:
        scheduler.stop()
        _revive(services)

    # Each fault hit running work, or it tested nothing.
    assert all(count > 0 for count in in_flight.values()), in_flight
    jobs = await db("SELECT id, status, error_code, error_message, attempts, result FROM jobs "
                    "WHERE id = ANY(CAST(:ids AS uuid[]))", ids=ids)
    assert [(j.status, j.error_code, j.error_message) for j in jobs if j.status != "succeeded"] == []
    results = {str(j.id): j.result["memories"] for j in jobs}
    assert results == {job_id: n for job_id, n in zip(ids, ITEMS, strict=True)}

    stored = await db("SELECT source_job_id, source_index, content, embedding IS NOT NULL FROM memories "
                      "WHERE user_id = :scope", scope=scope)
    assert len(stored) == sum(ITEMS), f"{len(stored)} memories for {sum(ITEMS)} items"
    job_of = {uuid.UUID(job_id): j for j, job_id in enumerate(ids)}
    keys = [(job_of[row[0]], row[1]) for row in stored]
    assert len(set(keys)) == len(keys), "a (job, item index) stored twice"
    assert len({(row[0], row[2]) for row in stored}) == len(stored), "the same content stored twice in a job"
    assert {key: row[2] for key, row in zip(keys, stored, strict=True)} == expected
    assert all(row[3] for row in stored), "a memory without its embedding"


async def _until_done(db, ids: list[str]) -> bool:
    return await _non_terminal(db, ids) == 0


async def test_a_database_that_is_shutting_down_is_an_outage_503_not_a_500(stack, main_tenant):
    # PostgreSQL refuses new sessions with SQLSTATE 57P03 while it shuts down, starts up or recovers
    # from a crash (as after a restart under `agentmem up`): an outage like a refused connection.
    data_dir = Path(tempfile.mkdtemp(prefix="agentmem-test-stopping-", dir="/tmp"))
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    held = await asyncpg.connect(pg.url)
    try:
        pg.process.send_signal(signal.SIGTERM)  # a smart shutdown: it waits for `held`, refusing everyone else

        async def refusing():
            try:
                await (await asyncpg.connect(pg.url)).close()
            except asyncpg.CannotConnectNowError:
                return True
            return False

        await _until(refusing, "PostgreSQL to refuse new sessions")
        port = free_port()
        api = stack.spawn("api-db-stopping", ["-m", "cli.main", "api", "--port", str(port)],
                          env=stack.env | {"AGENTMEM_DATABASE_URL": pg.url})
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", 60, api)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15,
                                         headers=main_tenant.headers()) as c:
                response = await c.get("/api/v1/jobs")
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
                ready = await c.get("/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        finally:
            api.stop()
    finally:
        await held.close()
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_retry_waiting_in_a_worker_when_valkey_restarts_still_runs(client, stack, services, db, scope):
    # A worker holds a delayed retry in memory until its time comes, while Redis lists it as that worker's.
    # When the worker's Redis connection breaks, Dramatiq forgets what it held; Redis, restarted from its
    # append-only file, still lists the message as the live worker's, so nothing delivers it again.
    if services.valkey is None:
        pytest.skip("needs the embedded Valkey (an AGENTMEM_TEST_REDIS_URL server can't be killed from here)")
    others = [p for name, proc in stack.procs.items() if name.startswith("worker") and proc.popen.poll() is None
              for p in [psutil.Process(proc.popen.pid), *psutil.Process(proc.popen.pid).children(recursive=True)]]
    for process in others:  # only this test's worker, whose retries wait 5 s, may take the job
        process.suspend()
    slow_retries = {"AGENTMEM_JOB_MIN_BACKOFF_MS": "5000", "AGENTMEM_JOB_MAX_BACKOFF_MS": "5000"}
    worker = stack.spawn("worker-slow-retries", ["-m", "cli.main", "worker"], env=stack.env | slow_retries)
    scheduler: Proc = stack.spawn("scheduler-retries", ["-m", "cli.main", "scheduler"],
                                  env=stack.env | {"AGENTMEM_SCHEDULER_INTERVAL_SECONDS": "0.5"})
    try:
        tag = uuid.uuid4().hex[:8]
        submitted = await client.post("/api/v1/memories", json={"user_id": scope, "items": [
            {"content": f"{scope}: retried across a Valkey restart @@fail429:{tag}:1@@"}]})
        job_id = submitted.json()["id"]
        valkey = redis.Redis.from_url(services.redis_url)

        async def held_for_retry():
            [[status, code]] = await db("SELECT status, error_code FROM jobs WHERE id = :j", j=job_id)
            held = [key for key in valkey.scan_iter("agentmem:queue:__acks__.*.embedding.DQ")
                    if valkey.sismember(key, job_id)]
            return status == "queued" and code == "embedding_unavailable" and held

        await _until(held_for_retry, "the retry held by the worker")
        services.kill(services.valkey)
        await _readiness(client, "redis", ok=False)
        services.valkey.start()
        await _readiness(client, "redis", ok=True)

        async def finished():
            [[status]] = await db("SELECT status FROM jobs WHERE id = :j", j=job_id)
            return status in ("succeeded", "failed", "cancelled") and status

        assert await _until(finished, "the retried job to finish", timeout=60) == "succeeded"
    finally:
        for process in others:
            process.resume()
        scheduler.stop()
        worker.stop()
        _revive(services)
    [[count]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job_id)
    assert count == 1
