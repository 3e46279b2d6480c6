"""Schedules: the API, firing each due time once (two real scheduler processes, and two passes without the
lock), catching up after a stopped scheduler, and the defaults every organization gets."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from core.db import session_scope
from pipelines.schedules import defaults, fire
from pipelines.schedules.defaults import DEFAULTS
from schemas.permissions import Role
from tests.support.accounts import access_headers
from tests.support.sse import finish
from tests.support.tenants import make_user
from workers import scheduler


async def _schedule(client, **fields) -> dict:
    body = {"name": f"s-{uuid.uuid4().hex[:8]}", "task": "integrity", "cron": "0 5 * * *"} | fields
    response = await client.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def _make_due(db, schedule_id: str, ago: timedelta = timedelta(seconds=1)) -> datetime:
    due = datetime.now(UTC) - ago
    await db("UPDATE schedules SET next_run_at = :due WHERE id = :id", due=due, id=schedule_id)
    return due


async def _runs(db, schedule_id: str) -> list:
    return await db("SELECT id, idempotency_key, payload FROM jobs WHERE kind = 'maintenance' "
                    "AND payload->>'schedule_id' = :id", id=schedule_id)


async def test_a_schedule_is_created_read_changed_and_deleted(as_role):
    owner, viewer = as_role(Role.OWNER), as_role(Role.VIEWER)
    made = await _schedule(owner, name="nightly integrity", cron="30 2 * * *", timezone="Europe/Paris",
                           catch_up="skip")
    assert made["task"] == "integrity" and made["enabled"] is True and made["platform"] is False
    assert made["default"] is None and made["last_run_at"] is None and made["last_job_status"] is None
    due = datetime.fromisoformat(made["next_run_at"])
    assert due > datetime.now(UTC) and due.astimezone(ZoneInfo("Europe/Paris")).hour == 2
    assert [s["id"] for s in (await viewer.get("/api/v1/schedules")).json()] == [made["id"]]
    changed = await owner.patch(f"/api/v1/schedules/{made['id']}", json={"interval_seconds": 3600})
    assert changed.status_code == 200, changed.text
    assert changed.json()["cron"] is None and changed.json()["interval_seconds"] == 3600
    again = await owner.post("/api/v1/schedules", json={"name": "Nightly  Integrity", "task": "integrity",
                                                        "interval_seconds": 600})
    assert again.status_code == 409 and again.json()["error"]["code"] == "schedule_name_taken"
    assert (await owner.delete(f"/api/v1/schedules/{made['id']}")).status_code == 204
    gone = await viewer.get(f"/api/v1/schedules/{made['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "schedule_not_found"


async def test_bad_schedules_are_refused_with_stable_codes_and_change_nothing(as_role):
    owner, member = as_role(Role.OWNER), as_role(Role.MEMBER)
    cases = [({"cron": "61 * * * *"}, 422, "invalid_cron"),
             ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, 422, "invalid_timezone"),
             ({"cron": None, "interval_seconds": 30}, 422, "invalid_interval"),
             ({"cron": "0 3 * * *", "interval_seconds": 3600}, 422, "invalid_timing"),
             ({"cron": None}, 422, "invalid_timing"),
             ({"params": {"deep": True}}, 422, "invalid_params"),
             ({"task": "defragment"}, 404, "unknown_task"),
             ({"task": "vacuum"}, 422, "task_scope"),
             ({"task": "vacuum", "platform": True}, 403, "superuser_required")]
    for fields, status, code in cases:
        body = {"name": "refused", "task": "integrity", "cron": "0 3 * * *"} | fields
        response = await owner.post("/api/v1/schedules", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (fields, response.text)
    denied = await member.post("/api/v1/schedules", json={"name": "x", "task": "integrity", "cron": "0 3 * * *"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert (await owner.get("/api/v1/schedules")).json() == []
    made = await _schedule(owner)
    bad = await owner.patch(f"/api/v1/schedules/{made['id']}", json={"cron": "0 0 31 2 *"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cron"
    assert (await owner.get(f"/api/v1/schedules/{made['id']}")).json() == made


async def test_a_due_schedule_runs_once_as_an_ordinary_job(owner, db):
    made = await _schedule(owner, interval_seconds=3600, cron=None)
    due = await _make_due(db, made["id"])
    report = await scheduler.maintain_once()
    assert report["schedules_fired"] >= 1
    [run] = await _runs(db, made["id"])
    assert run.idempotency_key == f"schedule:{made['id']}:{due.isoformat()}"
    assert run.payload == {"task": "integrity", "params": {}, "schedule_id": made["id"]}
    job = await finish(owner, str(run.id))
    assert job["status"] == "succeeded" and job["result"]["task"] == "integrity"
    shown = (await owner.get(f"/api/v1/schedules/{made['id']}")).json()
    assert shown["last_job_id"] == str(run.id) and shown["last_job_status"] == "succeeded"
    # Intervals keep their phase: the next run is one interval after the due time, not after the pass.
    assert datetime.fromisoformat(shown["next_run_at"]) == due + timedelta(hours=1)
    await scheduler.maintain_once()
    assert len(await _runs(db, made["id"])) == 1


async def test_two_scheduler_processes_fire_a_due_schedule_once(owner, db, stack):
    made = await _schedule(owner)
    await _make_due(db, made["id"])
    results = await asyncio.gather(*(asyncio.to_thread(stack.run, "scheduler", "--once") for _ in range(2)))
    for result in results:
        assert result.returncode == 0, result.stderr
    reports = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert len(await _runs(db, made["id"])) == 1, reports


async def test_the_compare_and_swap_alone_fires_a_due_time_once(owner, db):
    # Two passes that both read the schedule as due, on connections of their own, without the scheduler's lock.
    made = await _schedule(owner)
    await _make_due(db, made["id"])
    now = datetime.now(UTC)
    async with session_scope() as first, session_scope() as second:
        read = []
        for session in (first, second):
            [row] = [r for r in await fire.due_schedules(session, now, 10_000) if str(r.id) == made["id"]]
            await session.commit()
            session.expunge_all()
            read.append(row)
        outcomes = await asyncio.gather(fire.fire_one(first, read[0], now, 600),
                                        fire.fire_one(second, read[1], now, 600))
    assert sorted(outcomes) == ["lost", "ran"]
    assert len(await _runs(db, made["id"])) == 1


async def test_after_a_stopped_scheduler_run_once_catches_up_with_one_run(owner, db, stack):
    made = await _schedule(owner, cron="0 * * * *", catch_up="run_once")
    await _make_due(db, made["id"], ago=timedelta(hours=5, minutes=1))  # five hourly runs missed
    result = stack.run("scheduler", "--once")
    assert result.returncode == 0, result.stderr
    assert len(await _runs(db, made["id"])) == 1
    shown = (await owner.get(f"/api/v1/schedules/{made['id']}")).json()
    upcoming = datetime.fromisoformat(shown["next_run_at"])
    assert datetime.now(UTC) < upcoming <= datetime.now(UTC) + timedelta(hours=1) and upcoming.minute == 0
    assert stack.run("scheduler", "--once").returncode == 0
    assert len(await _runs(db, made["id"])) == 1


async def test_after_a_stopped_scheduler_skip_waits_for_the_next_due_time(owner, db):
    made = await _schedule(owner, cron="0 * * * *", catch_up="skip")
    await _make_due(db, made["id"], ago=timedelta(hours=3))
    report = await scheduler.maintain_once()
    assert report["schedules_skipped"] >= 1
    assert await _runs(db, made["id"]) == []
    shown = (await owner.get(f"/api/v1/schedules/{made['id']}")).json()
    assert shown["last_run_at"] is None and datetime.fromisoformat(shown["next_run_at"]) > datetime.now(UTC)


async def test_a_disabled_schedule_does_not_run_and_enabling_it_starts_from_now(owner, db):
    made = await _schedule(owner, enabled=False)
    await _make_due(db, made["id"], ago=timedelta(days=2))
    await scheduler.maintain_once()
    assert await _runs(db, made["id"]) == []
    enabled = (await owner.patch(f"/api/v1/schedules/{made['id']}", json={"enabled": True})).json()
    assert datetime.fromisoformat(enabled["next_run_at"]) > datetime.now(UTC)


async def test_defaults_are_installed_once_and_a_disabled_default_stays_disabled(owner, tenant, db):
    async with session_scope() as session:
        added = await defaults.install_defaults(session, org_ids=[tenant.org_id], platform=False)
        await session.commit()
    org_defaults = [d for d in DEFAULTS if not d.platform]
    assert added == len(org_defaults)
    listed = (await owner.get("/api/v1/schedules")).json()
    assert {s["default"] for s in listed} == {d.name for d in org_defaults}
    assert all(datetime.fromisoformat(s["next_run_at"]) > datetime.now(UTC) for s in listed)
    # Every default runs, but consolidate: merging memories changes what users wrote, so an admin turns it on.
    assert {s["task"] for s in listed if not s["enabled"]} == {"consolidate"}
    assert {s["task"] for s in listed} >= {"reembed", "purge", "integrity", "retention"}
    retention = next(s for s in listed if s["task"] == "retention")
    assert (await owner.patch(f"/api/v1/schedules/{retention['id']}", json={"enabled": False})).status_code == 200
    refused = await owner.delete(f"/api/v1/schedules/{retention['id']}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "default_schedule"
    async with session_scope() as session:
        assert await defaults.install_defaults(session, org_ids=[tenant.org_id], platform=False) == 0
        await session.commit()
    again = (await owner.get("/api/v1/schedules")).json()
    assert len(again) == len(listed)
    assert next(s for s in again if s["id"] == retention["id"])["enabled"] is False


async def test_platform_schedules_are_for_superusers_and_run_platform_tasks(stack, tenant, as_role, db):
    admin = await make_user("sched-super", superuser=True, org_id=tenant.org_id, role=Role.OWNER)
    superuser = as_role(headers=access_headers(admin.id, tenant.org_id))
    made = await superuser.post("/api/v1/schedules", json={"name": f"vacuum-{uuid.uuid4().hex[:6]}", "task": "vacuum",
                                                           "cron": "0 4 * * 0", "platform": True})
    assert made.status_code == 201, made.text
    assert made.json()["platform"] is True and made.json()["organization_id"] is None
    listed = (await superuser.get("/api/v1/schedules", params={"platform": "true"})).json()
    assert made.json()["id"] in [s["id"] for s in listed]
    owner = as_role(Role.OWNER)
    assert made.json()["id"] not in [s["id"] for s in (await owner.get("/api/v1/schedules")).json()]
    hidden = await owner.get(f"/api/v1/schedules/{made.json()['id']}")
    assert hidden.status_code == 404
    refused = await owner.get("/api/v1/schedules", params={"platform": "true"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "superuser_required"
    await db("UPDATE schedules SET enabled = false WHERE id = :id", id=made.json()["id"])
