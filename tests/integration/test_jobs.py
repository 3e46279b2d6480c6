"""Job semantics: idempotency, cancellation, retries, listing."""

from __future__ import annotations

import uuid

from tests.support.sse import finish, follow


def items(n: int, text: str = "note", marker: str = "") -> list[dict]:
    return [{"content": f"{text} {i} {marker}".strip()} for i in range(n)]


async def post(client, body, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post("/api/v1/memories", json=body, headers=headers)


async def test_same_idempotency_key_and_body_gives_one_job_and_one_set_of_rows(client, scope, db):
    key = f"key-{uuid.uuid4()}"
    body = {"items": items(6), "user_id": scope}
    first, second = await post(client, body, key), await post(client, body, key)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    job = await finish(client, first.json()["id"])
    third = await post(client, body, key)  # a replay after completion still returns the same job
    assert third.json()["id"] == job["id"] and third.json()["status"] == "succeeded"
    assert job["attempts"] == 1
    [[jobs_with_key]] = await db("SELECT count(*) FROM jobs WHERE idempotency_key = :k", k=key)
    [[rows]] = await db("SELECT count(*) FROM memories WHERE user_id = :u", u=scope)
    assert jobs_with_key == 1 and rows == 6


async def test_same_idempotency_key_with_another_body_is_a_conflict_and_stores_nothing(client, scope, db):
    key = f"key-{uuid.uuid4()}"
    first = await post(client, {"items": items(2), "user_id": scope}, key)
    assert first.status_code == 202
    conflict = await post(client, {"items": items(3, "other"), "user_id": scope}, key)
    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["details"]["job_id"] == first.json()["id"]
    await finish(client, first.json()["id"])
    [[rows]] = await db("SELECT count(*) FROM memories WHERE user_id = :u", u=scope)
    assert rows == 2


async def test_cancel_a_queued_job_takes_effect_at_once(client, scope, db, stack, main_tenant):
    # A queued job whose message has not reached a worker (as after a crash between commit and send).
    from core.db import session_scope
    from pipelines.jobs import rows as jobs
    from pipelines.memories.store import ingest_payload
    from schemas.enums import JobKind
    from schemas.memories import MemoryBatchIn

    org = main_tenant.org_id
    async with session_scope() as session:
        job, _ = await jobs.submit(session, org_id=org, kind=JobKind.INGEST_MEMORIES,
                                   payload=ingest_payload(MemoryBatchIn(items=items(2), user_id=scope)), total=2,
                                   idempotency_key=None, request_id=None, max_attempts=3)
        await session.commit()
    response = await client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    events = await follow(client, str(job.id))
    assert events[-1].event == "cancelled"
    # Even if the scheduler looks for stale work now, a cancelled job is never run.
    assert stack.run("scheduler", "--once").returncode == 0
    [[rows]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job.id)
    assert rows == 0
    # Its outcome is audited like any job's, for the submitter (none here: the system).
    [outcome] = await db("SELECT actor, result, details, request_id FROM audit_logs WHERE target_id = :j "
                         "AND action = 'job.cancelled'", j=str(job.id))
    details = {"kind": "ingest_memories", "attempts": 0, "error_code": "cancelled"}
    assert tuple(outcome) == ("system", "failure", details, None)
    again = await client.post(f"/api/v1/jobs/{job.id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_already_finished"


async def test_cancel_a_running_job_stops_it_at_the_next_checkpoint(client, scope, db):
    # 12 chunks of 8 items, each chunk's embedding call slowed down: plenty of checkpoints.
    job = (await post(client, {"items": items(96, "slow", "@@slow:0.4@@"), "user_id": scope})).json()
    await follow(client, job["id"], stop_after=lambda e: e.event == "progress" and e.data["data"]["done"] > 0)
    response = await client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    events = await follow(client, job["id"])
    assert events[-1].event == "cancelled"
    final = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
    assert final["status"] == "cancelled" and final["error"]["code"] == "cancelled"
    [[rows]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job["id"])
    assert 0 < rows < 96
    # What was stored before the cancellation stays, and the job says so, on its row and in its last event.
    kept = final["result"]
    assert kept["kept"] == rows and kept["not_stored"] == 96 - rows and kept["memories"] == 96
    assert events[-1].data["data"]["result"] == kept
    listed = (await client.get("/api/v1/memories", params={"source_job_id": job["id"], "limit": 500})).json()
    assert len(listed["items"]) == rows


async def test_transient_failures_are_retried_with_the_last_error_visible_until_success(client, scope):
    tag = uuid.uuid4().hex[:8]
    job = (await post(client, {"items": items(3, "flaky", f"@@fail429:{tag}:2@@"), "user_id": scope})).json()
    events = await follow(client, job["id"])
    kinds = [e.event for e in events]
    assert kinds.count("retrying") == 2 and kinds[-1] == "succeeded", kinds
    retrying = next(e for e in events if e.event == "retrying")
    assert retrying.data["data"]["error"]["code"] == "embedding_unavailable"
    final = (await client.get(f"/api/v1/jobs/{job['id']}")).json()
    assert final["status"] == "succeeded" and final["attempts"] == 3 and final["error"] is None


async def test_a_permanent_failure_fails_at_once_with_its_code(client, scope, db):
    job = (await post(client, {"items": items(2, "bad", "@@reject@@"), "user_id": scope})).json()
    final = await finish(client, job["id"])
    assert final["status"] == "failed" and final["attempts"] == 1
    assert final["error"]["code"] == "embedding_rejected"
    [[rows]] = await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job["id"])
    assert rows == 0


async def test_exhausted_retries_fail_the_job_with_the_last_error(client, scope):
    tag = uuid.uuid4().hex[:8]
    job = (await post(client, {"items": items(1, "down", f"@@fail500:{tag}:100@@"), "user_id": scope})).json()
    final = await finish(client, job["id"])
    assert final["status"] == "failed"
    assert final["attempts"] == final["max_attempts"] == 3
    assert final["error"]["code"] == "embedding_unavailable"
    assert "gave up after 3 attempts" in final["error"]["message"]


async def test_list_jobs_filters_and_paginates(client, scope):
    created = [(await post(client, {"items": items(1, f"listing {i}"), "user_id": scope})).json() for i in range(3)]
    for job in created:
        await finish(client, job["id"])
    page = (await client.get("/api/v1/jobs", params={"kind": "ingest_memories", "status": "succeeded",
                                                     "limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    assert all(j["status"] == "succeeded" and j["kind"] == "ingest_memories" for j in page["items"])
    newest = [j["id"] for j in page["items"]]
    assert newest == [created[2]["id"], created[1]["id"]]
    nxt = (await client.get("/api/v1/jobs", params={"kind": "ingest_memories", "status": "succeeded", "limit": 2,
                                                    "cursor": page["next_cursor"]})).json()
    assert nxt["items"][0]["id"] == created[0]["id"]
    none = (await client.get("/api/v1/jobs", params={"status": "cancelled", "kind": "embed_memory"})).json()
    assert all(j["kind"] == "embed_memory" for j in none["items"])


async def test_a_job_over_its_time_limit_fails_with_time_limit_exceeded(client, stack, scope):
    import psutil

    from tests.support.stack import wait_http

    # Only a worker with a 1 s limit may take this job: freeze the others meanwhile.
    regular = [p for name, proc in stack.procs.items() if name.startswith("worker") and proc.popen.poll() is None
               for p in [psutil.Process(proc.popen.pid), *psutil.Process(proc.popen.pid).children(recursive=True)]]
    strict = stack.spawn("worker-time-limited", ["-m", "cli.main", "worker"],
                         env=stack.env | {"AGENTMEM_JOB_TIME_LIMIT_SECONDS": "1"})
    for process in regular:
        process.suspend()
    try:
        wait_http(stack.api_url + "/healthz", 10)
        job = (await post(client, {"items": items(2, "too slow", "@@slow:3@@"), "user_id": scope})).json()
        final = await finish(client, job["id"], timeout=60)
    finally:
        strict.stop()
        for process in regular:
            process.resume()
    assert final["status"] == "failed" and final["attempts"] == 1
    assert final["error"]["code"] == "time_limit_exceeded"
