"""The housekeeping maintenance tasks on seeded data, each run as an ordinary job by a real worker:
retention, sweep_blocks, summarize_conversations and vacuum (superusers)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from core.events import job_stream
from core.redis import get_redis
from pipelines.maintenance import integrity
from schemas.permissions import Role
from tests.support.accounts import access_headers
from tests.support.maintenance import run_task
from tests.support.sse import finish
from tests.support.tenants import make_user
from workers import scheduler


async def _job(db, org_id, *, days_ago: float, status: str = "succeeded") -> str:
    job_id = str(uuid.uuid4())
    await db("INSERT INTO jobs (id, org_id, kind, status, payload, created_at, finished_at) VALUES "
             "(:id, :org, 'ingest_memories', :status, '{\"items\": [{\"content\": \"old\"}]}', "
             "now() - make_interval(days => :d), now() - make_interval(days => :d))",
             id=job_id, org=org_id, status=status, d=days_ago)
    return job_id


async def test_retention_drops_payloads_then_jobs_audit_rows_and_stale_temp_files(owner, tenant, other_tenant, db,
                                                                                  stack):
    org = tenant.org_id
    recent, week_old, month_old = [await _job(db, org, days_ago=d) for d in (1, 10, 40)]
    others = await _job(db, other_tenant.org_id, days_ago=40)
    await get_redis().xadd(job_stream(month_old), {"type": "succeeded"})
    await db("INSERT INTO audit_logs (id, org_id, actor, action, result, created_at) VALUES "
             "(gen_random_uuid(), :org, 'test', 'ancient.thing', 'success', now() - interval '400 days'), "
             "(gen_random_uuid(), :org, 'test', 'recent.thing', 'success', now() - interval '10 days')", org=org)
    root = stack.services.data_dir / "workspaces" / str(org)
    (root / "notes").mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    stale, fresh, lock, kept = (root / "notes" / ".save-abc", root / ".save-new", root / ".save-quota.lock",
                                root / "notes" / "kept.txt")
    for path in (stale, fresh, lock, kept):
        path.write_text("x")
    two_days_ago = time.time() - 2 * 86_400
    for path in (stale, lock, kept):
        os.utime(path, (two_days_ago, two_days_ago))

    result = await run_task(owner, "retention")

    assert result["scope"] == "organization"
    # Payloads first: the 10- and the 40-day-old job lose theirs, then the 40-day-old one goes.
    assert result["job_payloads_dropped"] == 2 and result["jobs_deleted"] == 1
    assert result["audit_rows_deleted"] == 1 and result["temp_files_removed"] == 1
    payloads = dict(await db("SELECT CAST(id AS text), payload FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))",
                             ids=[recent, week_old, month_old, others]))
    assert payloads[week_old] == {} and payloads[recent]["items"] and payloads[others]["items"]
    assert month_old not in payloads  # deleted, with its event stream
    assert await get_redis().exists(job_stream(month_old)) == 0
    actions = {a for (a,) in await db("SELECT action FROM audit_logs WHERE org_id = :org AND actor = 'test'", org=org)}
    assert actions == {"recent.thing"}
    assert not stale.exists() and fresh.exists() and lock.exists() and kept.exists()
    # Idempotent: a second run finds nothing more to do.
    again = await run_task(owner, "retention")
    assert again["jobs_deleted"] == 0 and again["job_payloads_dropped"] == 0 and again["temp_files_removed"] == 0


async def test_sweep_blocks_queues_a_rewrite_for_full_blocks_without_one(owner, db):
    made = {}
    for label, fields in {"full": {}, "readonly": {"read_only": True}, "roomy": {}}.items():
        response = await owner.post("/api/v1/blocks", json={"label": label, "value": "short", "limit": 200} | fields)
        assert response.status_code == 201, response.text
        made[label] = response.json()["id"]
    # Filled behind the API's back (as an import or a refused rewrite leaves a block): no job was queued.
    await db("UPDATE blocks SET value = repeat('Old notes about the user. ', 7) WHERE id = ANY(CAST(:ids AS uuid[]))",
             ids=[made["full"], made["readonly"]])
    result = await run_task(owner, "sweep_blocks")
    assert result["blocks_over_threshold"] == 1 and result["rewrites_queued"] == 1
    [(job_id, payload)] = await db("SELECT CAST(id AS text), payload FROM jobs WHERE kind = 'block_rewrite' "
                                   "AND payload->>'block_id' = ANY(CAST(:ids AS text[]))", ids=list(made.values()))
    assert payload["block_id"] == made["full"] and payload["trigger"] == "threshold"
    rewrite = await finish(owner, job_id)
    assert rewrite["status"] == "succeeded", rewrite
    block = (await owner.get(f"/api/v1/blocks/{made['full']}")).json()
    assert len(block["value"]) <= 0.9 * 200
    assert (await run_task(owner, "sweep_blocks"))["rewrites_queued"] == 0


async def test_summarize_conversations_refreshes_idle_conversations_only(owner, db):
    agent = await owner.post("/api/v1/agents", json={"name": f"idle-{uuid.uuid4().hex[:6]}"})
    assert agent.status_code == 201, agent.text
    conversations = []
    for title in ("idle", "active"):
        made = await owner.post(f"/api/v1/agents/{agent.json()['id']}/conversations", json={"title": title})
        assert made.status_code == 201, made.text
        for text in ("I moved to Lisbon in March.", "My sister Ana visits every summer.",
                     "I am learning Portuguese.", "I work as a nurse at night."):
            said = await owner.post(f"/api/v1/conversations/{made.json()['id']}/messages",
                                    json={"content": text, "respond": False})
            assert said.status_code == 201, said.text
        conversations.append(made.json()["id"])
    idle, active = conversations
    await db("UPDATE messages SET created_at = now() - interval '7 hours' WHERE conversation_id = :c", c=idle)

    result = await run_task(owner, "summarize_conversations", {"keep_last": 1})

    assert result["idle_conversations"] == 1 and result["summaries_queued"] == 1
    [(job_id, payload)] = await db("SELECT CAST(id AS text), payload FROM jobs WHERE kind = 'summarize_conversation' "
                                   "AND payload->>'conversation_id' = ANY(CAST(:ids AS text[]))", ids=conversations)
    assert payload == {"conversation_id": idle, "upto_seq": 3}
    assert (await finish(owner, job_id))["status"] == "succeeded"
    [(upto, summary)] = await db("SELECT summary_upto, summary FROM conversations WHERE id = :c", c=idle)
    assert upto == 3 and "Lisbon" in summary
    assert (await run_task(owner, "summarize_conversations", {"keep_last": 1}))["summaries_queued"] == 0


async def test_vacuum_is_for_superusers_and_reports_index_health(tenant, as_role, db):
    refused = await as_role(Role.OWNER).post("/api/v1/maintenance/vacuum", json={})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "superuser_required"
    admin = await make_user("vacuum-super", superuser=True, org_id=tenant.org_id, role=Role.OWNER)
    superuser = as_role(headers=access_headers(admin.id, tenant.org_id))
    # Dead rows enough for a VACUUM: a batch of audit rows inserted and deleted again.
    await db("INSERT INTO audit_logs (id, org_id, actor, action, result) SELECT gen_random_uuid(), :org, 'bulk', "
             "'bulk.thing', 'success' FROM generate_series(1, 3000)", org=tenant.org_id)
    await db("DELETE FROM audit_logs WHERE actor = 'bulk'")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the statistics the task reads are flushed by each backend when idle
        await db("SELECT pg_stat_force_next_flush()")
        [(dead,)] = await db("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'audit_logs'")
        if dead >= 3000:
            break
        await asyncio.sleep(0.2)
    result = await run_task(superuser, "vacuum", {"dead_fraction": 0})
    actions = {t["table"]: t["action"] for t in result["tables"]}
    assert {"memories", "jobs", "audit_logs"} <= set(actions) and actions["memories"] in ("analyze", "vacuum")
    assert actions["audit_logs"] == "vacuum"
    indexes = {i["index"]: i for i in result["indexes"]}
    assert "ix_jobs_org_created" in indexes and indexes["ix_jobs_org_created"]["size_bytes"] > 0
    assert indexes["jobs_pkey"]["unused"] is False  # backs a constraint
    assert result["invalid_indexes"] == []
    [(analyzed,)] = await db("SELECT last_analyze IS NOT NULL OR last_vacuum IS NOT NULL FROM pg_stat_user_tables "
                             "WHERE relname = 'memories'")
    assert analyzed is True


async def test_the_cli_runs_a_task_now_and_follows_its_job_to_the_end(stack, tenant):
    common = ["--api-url", stack.api_url, "--api-key", tenant.keys[Role.ADMIN]]
    ran = await asyncio.to_thread(stack.run, "maintenance", "run", "integrity", "--wait", "--org",
                                  str(tenant.org_id), *common, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "integrity: job " in ran.stdout and '"healthy": true' in ran.stdout.split("succeeded: ")[1]
    steps = len(integrity.CHECKS)
    assert "maintenance: 100%" in ran.stderr and f"{steps}/{steps}" in ran.stderr  # the bar, one step per check
    unknown = await asyncio.to_thread(stack.run, "maintenance", "run", "defragment", *common)
    assert unknown.returncode == 2 and "unknown_task" in unknown.stderr and "retention" in unknown.stderr
    member = await asyncio.to_thread(stack.run, "maintenance", "run", "integrity", "--api-url", stack.api_url,
                                     "--api-key", tenant.keys[Role.MEMBER])
    assert member.returncode == 2 and "permission_denied" in member.stderr


async def test_a_platform_schedule_runs_retentions_platform_part_once_for_the_service(stack, tenant, as_role, db):
    admin = await make_user("retention-super", superuser=True, org_id=tenant.org_id, role=Role.OWNER)
    superuser = as_role(headers=access_headers(admin.id, tenant.org_id))
    redis = get_redis()
    gone_job = uuid.uuid4()
    orphan, kept = f"agentmem:revoked:{uuid.uuid4().hex}", f"agentmem:revoked:{uuid.uuid4().hex}"
    await redis.xadd(job_stream(gone_job), {"type": "succeeded"})
    await redis.set(orphan, "1")  # no expiry: it would never go
    await redis.set(kept, "1", ex=600)
    await db("INSERT INTO audit_logs (id, org_id, actor, action, result, created_at) VALUES (gen_random_uuid(), NULL, "
             "'test', 'ancient.platform.thing', 'success', now() - interval '400 days')")
    made = await superuser.post("/api/v1/schedules", json={"name": f"platform-retention-{uuid.uuid4().hex[:6]}",
                                                           "task": "retention", "cron": "0 1 * * *", "platform": True})
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    await db("UPDATE schedules SET next_run_at = now() - interval '1 second' WHERE id = :id", id=schedule_id)

    await scheduler.maintain_once()

    [(job_id, org_id, payload)] = await db("SELECT id, org_id, payload FROM jobs WHERE payload->>'schedule_id' = :id",
                                           id=schedule_id)
    assert payload["platform"] is True and payload["task"] == "retention"
    [(oldest,)] = await db("SELECT id FROM organizations WHERE deleted_at IS NULL ORDER BY created_at, id LIMIT 1")
    assert org_id == oldest
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        [(status, result)] = await db("SELECT status, result FROM jobs WHERE id = :id", id=job_id)
        if status in ("succeeded", "failed", "cancelled"):
            break
        await asyncio.sleep(0.2)
    assert status == "succeeded", result
    assert result["scope"] == "platform" and result["audit_rows_deleted"] >= 1 and result["revoked_tokens"] >= 1
    assert await redis.exists(job_stream(gone_job)) == 0 and await redis.exists(orphan) == 0
    assert await redis.exists(kept) == 1
    assert await db("SELECT 1 FROM audit_logs WHERE action = 'ancient.platform.thing'") == []
    await db("UPDATE schedules SET enabled = false WHERE id = :id", id=schedule_id)
