"""Crashes: a worker killed mid-job, a job row whose message was never sent, a dead worker's lease."""

from __future__ import annotations

import json
import os
import signal

import psutil

from core.db import session_scope
from pipelines.jobs import rows as jobs
from pipelines.memories.store import ingest_payload
from schemas.enums import JobKind
from schemas.memories import MemoryBatchIn
from tests.support.sse import finish, follow


async def _unsent_job(main_tenant, scope: str, n: int):
    """A committed queued row with no message: what a crash between commit and send leaves."""
    org = main_tenant.org_id
    batch = MemoryBatchIn(items=[{"content": f"orphaned note {i}"} for i in range(n)], user_id=scope)
    async with session_scope() as session:
        job, _ = await jobs.submit(session, org_id=org, kind=JobKind.INGEST_MEMORIES, payload=ingest_payload(batch),
                                   total=n, idempotency_key=None, request_id=None, max_attempts=3)
        await session.commit()
    return job


async def test_worker_killed_mid_job_is_redelivered_and_completes_once(client, stack, scope, db):
    items = [{"content": f"durable item {i} @@slow:0.5@@"} for i in range(64)]  # 8 slow chunks
    job = (await client.post("/api/v1/memories", json={"items": items, "user_id": scope})).json()
    await follow(client, job["id"], stop_after=lambda e: e.event == "progress" and e.data["data"]["done"] >= 16)
    running = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
    victim_pid = int(running["worker"].rsplit(":", 1)[1])
    # Workers killed or stopped by earlier tests stay listed (their logs are kept): only live ones count.
    victim = next(name for name, proc in stack.procs.items() if name.startswith("worker")
                  and proc.popen.poll() is None
                  and victim_pid in [c.pid for c in psutil.Process(proc.popen.pid).children(recursive=True)])
    os.kill(victim_pid, signal.SIGKILL)  # no chance to ack, release the lease or say goodbye
    stack.procs[victim].popen.wait(timeout=30)  # Dramatiq's main process shuts down after its child died
    stack.start_worker(victim + "-restarted")

    final = await finish(client, job["id"], timeout=120)
    assert final["status"] == "succeeded", final
    assert final["attempts"] >= 2
    assert final["result"]["already_stored"] >= 16 and final["result"]["memories"] == 64
    [[rows, distinct]] = await db("SELECT count(*), count(DISTINCT source_index) FROM memories "
                                  "WHERE source_job_id = :j", j=job["id"])
    assert rows == distinct == 64


async def test_a_stale_queued_row_is_resent_by_the_scheduler(client, stack, scope, db, main_tenant):
    job = await _unsent_job(main_tenant, scope, 3)
    await db("UPDATE jobs SET enqueued_at = now() - interval '1 minute' WHERE id = :j", j=job.id)
    result = stack.run("scheduler", "--once")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["resent"] >= 1
    final = await finish(client, str(job.id))
    assert final["status"] == "succeeded" and final["result"]["memories"] == 3


async def test_a_running_job_whose_worker_vanished_is_recovered(client, stack, scope, db, main_tenant):
    job = await _unsent_job(main_tenant, scope, 2)
    # As if a worker claimed it and died long ago, its message gone with it.
    await db("UPDATE jobs SET status = 'running', attempts = 1, worker = 'gone:1', "
             "lease_expires_at = now() - interval '1 minute' WHERE id = :j", j=job.id)
    result = stack.run("scheduler", "--once")
    assert result.returncode == 0, result.stderr
    final = await finish(client, str(job.id))
    assert final["status"] == "succeeded" and final["attempts"] == 2


async def test_a_job_that_is_queued_and_in_the_broker_is_not_sent_twice(client, stack, scope, db):
    # Backlogged, not lost: workers are frozen, the message waits in the broker, the row looks stale.
    frozen = [p for name, proc in stack.procs.items() if name.startswith("worker") and proc.popen.poll() is None
              for p in [psutil.Process(proc.popen.pid), *psutil.Process(proc.popen.pid).children(recursive=True)]]
    for process in frozen:
        process.suspend()
    try:
        job = (await client.post("/api/v1/memories", json={"items": [{"content": "backlogged"}],
                                                           "user_id": scope})).json()
        await db("UPDATE jobs SET enqueued_at = now() - interval '1 minute' WHERE id = :j", j=job["id"])
        report = json.loads(stack.run("scheduler", "--once").stdout.strip().splitlines()[-1])
    finally:
        for process in frozen:
            process.resume()
    assert report["resent"] == 0 and report["in_broker"] >= 1, report
    final = await finish(client, job["id"])
    assert final["status"] == "succeeded" and final["attempts"] == 1
