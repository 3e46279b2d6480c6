"""Rate limits (per key, per sign-in address) and per-organization quotas, against the real stack."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from core.db import session_scope
from core.settings import Settings
from pipelines.memories.store import hard_delete
from schemas.permissions import Role
from tests.support.clients import api_client, loopback_address
from tests.support.sse import finish
from tests.support.stack import free_port, wait_http
from tests.support.tenants import make_user

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


async def set_limits(db, org_id: uuid.UUID, **limits: int) -> None:
    await db("UPDATE organizations SET limits = CAST(:limits AS jsonb) WHERE id = :o", limits=json.dumps(limits),
             o=org_id)


def default(stack, name: str) -> int:
    """A setting as the stack's API process sees it."""
    return int(stack.env.get(f"AGENTMEM_{name.upper()}", Settings.model_fields[name].default))


def batch(n: int, label: str, marker: str = "") -> list[dict]:
    # The marker goes on the first item only: the model server acts on every occurrence in a request.
    return [{"content": f"{label} {i} {marker if i == 0 else ''}".strip()} for i in range(n)]


async def ingest(client, scope: str, n: int, label: str, marker: str = "", key: str | None = None):
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post("/api/v1/memories", json={"items": batch(n, label, marker), "user_id": scope},
                             headers=headers)


async def count(db, table: str, org_id: uuid.UUID) -> int:
    [[n]] = await db(f"SELECT count(*) FROM {table} WHERE org_id = :o", o=org_id)
    return n


def api_with(stack, name: str, **overrides: str) -> tuple:
    port = free_port()
    proc = stack.spawn(name, ["-m", "cli.main", "api", "--port", str(port)], env=stack.env | overrides)
    wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
    return proc, f"http://127.0.0.1:{port}"


# --- rate limits ---------------------------------------------------------------------------------

async def test_every_authenticated_response_carries_rate_headers_and_remaining_counts_down(tenant, as_role, db,
                                                                                           scope):
    await set_limits(db, tenant.org_id, rate_limit_per_minute=10)
    owner, viewer = as_role(Role.OWNER), as_role(Role.VIEWER)
    responses = [await owner.get("/api/v1/jobs"),
                 await owner.get(f"/api/v1/jobs/{uuid.uuid4()}"),
                 await owner.post("/api/v1/memories", json={"items": [], "user_id": scope}),
                 await viewer.get("/api/v1/jobs"),
                 await viewer.post("/api/v1/memories", json={"items": batch(1, "viewer"), "user_id": scope}),
                 await viewer.get("/api/v1/memories")]
    assert [r.status_code for r in responses] == [200, 404, 422, 200, 403, 200]
    for r in responses:
        assert all(name in r.headers for name in RATE_HEADERS), (r.status_code, r.headers)
        assert r.headers["x-ratelimit-limit"] == "10"
    # Each key has its own bucket; within it every request, answered with an error or not, costs one.
    for key_responses in (responses[:3], responses[3:]):
        assert [int(r.headers["x-ratelimit-remaining"]) for r in key_responses] == [9, 8, 7]
        resets = [int(r.headers["x-ratelimit-reset"]) for r in key_responses]
        assert 0 < resets[0] <= resets[1] <= resets[2] <= 60
    assert await count(db, "jobs", tenant.org_id) == 0


async def test_the_rate_limit_is_the_roles_default_unless_the_organization_overrides_it(stack, tenant, as_role, db):
    owner, viewer = as_role(Role.OWNER), as_role(Role.VIEWER)
    assert (await owner.get("/api/v1/jobs")).headers["x-ratelimit-limit"] == str(default(stack, "rate_limit_owner"))
    assert (await viewer.get("/api/v1/jobs")).headers["x-ratelimit-limit"] == str(default(stack, "rate_limit_viewer"))
    await set_limits(db, tenant.org_id, rate_limit_per_minute=42)
    assert (await owner.get("/api/v1/jobs")).headers["x-ratelimit-limit"] == "42"
    assert (await viewer.get("/api/v1/jobs")).headers["x-ratelimit-limit"] == "42"


async def test_a_request_over_the_rate_limit_gets_429_and_changes_nothing(tenant, owner, db, scope):
    limit = 3
    await set_limits(db, tenant.org_id, rate_limit_per_minute=limit)
    for _ in range(limit):
        assert (await owner.get("/api/v1/jobs")).status_code == 200
    refused = await ingest(owner, scope, 2, "over the limit")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["limit"] == limit
    assert 0 < int(refused.headers["retry-after"]) <= 60 / limit  # one request's worth of refill
    assert refused.headers["x-ratelimit-limit"] == str(limit) and refused.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(refused.headers["x-ratelimit-reset"]) <= 60
    assert await count(db, "jobs", tenant.org_id) == 0
    assert await count(db, "memories", tenant.org_id) == 0


async def test_each_key_has_its_own_bucket_and_other_organizations_are_unaffected(stack, tenant, other_tenant,
                                                                                  as_role, db):
    await set_limits(db, tenant.org_id, rate_limit_per_minute=2)
    owner = as_role(Role.OWNER)
    assert [(await owner.get("/api/v1/jobs")).status_code for _ in range(3)] == [200, 200, 429]
    same_org = await as_role(Role.ADMIN).get("/api/v1/jobs")
    assert same_org.status_code == 200
    assert (same_org.headers["x-ratelimit-limit"], same_org.headers["x-ratelimit-remaining"]) == ("2", "1")
    elsewhere = await as_role(Role.OWNER, other_tenant).get("/api/v1/jobs")
    assert elsewhere.status_code == 200
    limit = default(stack, "rate_limit_owner")
    assert (elsewhere.headers["x-ratelimit-limit"], elsewhere.headers["x-ratelimit-remaining"]) == (str(limit),
                                                                                                 str(limit - 1))


async def test_sign_in_attempts_beyond_the_limit_from_one_address_are_refused(stack):
    account = await make_user("signin-limit")
    proc, url = api_with(stack, "api-login-limit", AGENTMEM_RATE_LIMIT_LOGIN="3")
    try:
        async with api_client(url, address=loopback_address()) as c:
            for _ in range(3):
                wrong = await c.post("/api/v1/auth/login", json={"username": account.username, "password": "nope"})
                assert wrong.status_code == 401
            # Refused before the password is even checked: the right one doesn't help.
            refused = await c.post("/api/v1/auth/login", json={"username": account.username,
                                                               "password": account.password})
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) > 0
        async with api_client(url, address=loopback_address()) as c:
            elsewhere = await c.post("/api/v1/auth/login", json={"username": account.username,
                                                                 "password": account.password})
            assert elsewhere.status_code == 200
    finally:
        proc.stop()


# --- quotas --------------------------------------------------------------------------------------

async def test_a_batch_over_batch_items_is_refused_with_403_and_one_at_the_limit_is_accepted(tenant, owner, db,
                                                                                             scope):
    await set_limits(db, tenant.org_id, batch_items=3)
    refused = await ingest(owner, scope, 4, "too many")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "quota_batch_items" and error["details"] == {"quota": "batch_items", "limit": 3}
    assert await count(db, "jobs", tenant.org_id) == 0
    accepted = await ingest(owner, scope, 3, "just right")
    assert accepted.status_code == 202
    assert (await finish(owner, accepted.json()["id"]))["status"] == "succeeded"


async def test_max_memories_counts_stored_and_in_flight_items_and_a_refusal_writes_nothing(tenant, owner, db,
                                                                                           scope):
    await set_limits(db, tenant.org_id, max_memories=5)
    first = await ingest(owner, scope, 3, "first", "@@slow:3@@")
    assert first.status_code == 202
    refused = await ingest(owner, scope, 3, "refused")
    [[first_status]] = await db("SELECT status FROM jobs WHERE id = :j", j=first.json()["id"])
    assert first_status in ("queued", "running")  # nothing stored yet: its 3 items were counted as in flight
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "quota_max_memories" and error["details"] == {"quota": "max_memories", "limit": 5}
    fits = await ingest(owner, scope, 2, "fits")
    assert fits.status_code == 202
    for job in (first, fits):
        assert (await finish(owner, job.json()["id"]))["status"] == "succeeded"
    full = await ingest(owner, scope, 1, "one more")
    assert full.status_code == 403 and full.json()["error"]["code"] == "quota_max_memories"
    assert await count(db, "jobs", tenant.org_id) == 2
    assert await count(db, "memories", tenant.org_id) == 5
    [[leaked]] = await db("SELECT count(*) FROM memories WHERE org_id = :o AND content LIKE 'refused%'",
                          o=tenant.org_id)
    assert leaked == 0


async def test_concurrent_submissions_never_take_an_organization_past_max_memories(tenant, owner, db, scope):
    # The quota lock is taken after each job's row is written: the count under it must still see every
    # job committed before, so of eight racing requests of 3 items against 10, exactly three get in.
    await set_limits(db, tenant.org_id, max_memories=10)
    answers = await asyncio.gather(*(ingest(owner, scope, 3, f"race {n}") for n in range(8)))
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a.json()["error"]["code"] for a in answers if a.status_code != 202]
    assert len(accepted) == 3, [a.status_code for a in answers]
    assert refused == ["quota_max_memories"] * 5
    assert await count(db, "jobs", tenant.org_id) == 3  # a refused job's row did not stay
    for answer in accepted:
        assert (await finish(owner, answer.json()["id"]))["status"] == "succeeded"
    assert await count(db, "memories", tenant.org_id) == 9


async def hard_deleted(memory_id: str) -> None:
    async with session_scope() as session:
        assert await hard_delete(session, [uuid.UUID(memory_id)]) == 1
        await session.commit()


async def live_and_counted(db, org_id: uuid.UUID) -> tuple[int, int]:
    """The organization's live memories counted row by row, and the count the triggers keep (migration 0015)."""
    [[live, counted]] = await db(
        "SELECT (SELECT count(*) FROM memories WHERE org_id = :o AND deleted_at IS NULL), "
        "(SELECT coalesce(sum(live), 0) FROM memory_counts WHERE org_id = :o)", o=org_id)
    return live, counted


async def test_the_kept_memory_count_follows_every_write_and_the_quota_reads_it(tenant, owner, db, scope):
    await set_limits(db, tenant.org_id, max_memories=6)
    # Two jobs at once, from the API's connection and the workers' (stripes of their own).
    jobs = [await ingest(owner, scope, 3, f"counted {i}") for i in range(2)]
    for job in jobs:
        assert (await finish(owner, job.json()["id"]))["status"] == "succeeded"
    assert await live_and_counted(db, tenant.org_id) == (6, 6)
    assert (await ingest(owner, scope, 1, "full")).json()["error"]["code"] == "quota_max_memories"

    listed = (await owner.get("/api/v1/memories", params={"user_id": scope, "limit": 10})).json()["items"]
    first, second, third = (item["id"] for item in listed[:3])
    assert (await owner.delete(f"/api/v1/memories/{first}")).status_code == 204  # a soft delete
    assert await live_and_counted(db, tenant.org_id) == (5, 5)
    again = await ingest(owner, scope, 1, "fits again")  # the quota sees the freed place at once
    assert again.status_code == 202 and (await finish(owner, again.json()["id"]))["status"] == "succeeded"
    assert await live_and_counted(db, tenant.org_id) == (6, 6)

    # A soft-deleted row removed for good (as `purge` does) is not subtracted twice; a live one removed is; a
    # restore adds it back; an update of anything else changes nothing.
    await hard_deleted(first)
    assert await live_and_counted(db, tenant.org_id) == (6, 6)
    await db("UPDATE memories SET deleted_at = now() WHERE id = :i", i=second)
    await db("UPDATE memories SET deleted_at = now() WHERE id = :i", i=second)  # already deleted: no change
    assert await live_and_counted(db, tenant.org_id) == (5, 5)
    await db("UPDATE memories SET deleted_at = NULL WHERE id = :i", i=second)
    await db("UPDATE memories SET metadata = '{\"k\": 1}' WHERE org_id = :o", o=tenant.org_id)
    assert await live_and_counted(db, tenant.org_id) == (6, 6)
    await hard_deleted(third)
    assert await live_and_counted(db, tenant.org_id) == (5, 5)

    deleted = await owner.request("DELETE", "/api/v1/memories", params={"user_id": scope})  # a whole scope
    assert deleted.status_code == 202 and (await finish(owner, deleted.json()["id"]))["status"] == "succeeded"
    assert await live_and_counted(db, tenant.org_id) == (0, 0)


async def test_jobs_beyond_jobs_per_minute_get_429_with_retry_after(tenant, owner, db, scope):
    await set_limits(db, tenant.org_id, jobs_per_minute=2)
    accepted = [await ingest(owner, scope, 1, f"job {i}") for i in range(2)]
    assert [r.status_code for r in accepted] == [202, 202]
    refused = await ingest(owner, scope, 1, "third")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_jobs_per_minute" and error["details"] == {"quota": "jobs_per_minute", "limit": 2}
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert all(name in refused.headers for name in RATE_HEADERS)
    assert await count(db, "jobs", tenant.org_id) == 2
    for r in accepted:
        await finish(owner, r.json()["id"])


async def test_concurrent_jobs_are_refused_while_slow_jobs_run_and_accepted_once_they_finish(tenant, owner, db,
                                                                                             scope):
    await set_limits(db, tenant.org_id, concurrent_jobs=2)
    running = [await ingest(owner, scope, 1, f"slow {i}", "@@slow:2@@") for i in range(2)]
    assert [r.status_code for r in running] == [202, 202]
    refused = await ingest(owner, scope, 1, "third")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_concurrent_jobs" and error["details"] == {"quota": "concurrent_jobs", "limit": 2}
    assert int(refused.headers["retry-after"]) > 0
    assert await count(db, "jobs", tenant.org_id) == 2
    for r in running:
        assert (await finish(owner, r.json()["id"]))["status"] == "succeeded"
    again = await ingest(owner, scope, 1, "third")
    assert again.status_code == 202
    await finish(owner, again.json()["id"])


@pytest.mark.parametrize(("quota", "value", "status", "code"), [
    ("jobs_per_minute", 1, 429, "quota_jobs_per_minute"),
    ("max_memories", 2, 403, "quota_max_memories"),
])
async def test_replaying_an_accepted_request_is_not_refused_by_a_quota_now_full(tenant, owner, db, scope, quota,
                                                                               value, status, code):
    await set_limits(db, tenant.org_id, **{quota: value})
    key = f"key-{uuid.uuid4()}"
    first = await ingest(owner, scope, 2, "replayed", key=key)
    assert first.status_code == 202
    fresh = await ingest(owner, scope, 1, "fresh")
    assert (fresh.status_code, fresh.json()["error"]["code"]) == (status, code)  # the quota is full now
    replay = await ingest(owner, scope, 2, "replayed", key=key)
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    await finish(owner, first.json()["id"])
    after = await ingest(owner, scope, 2, "replayed", key=key)
    assert after.status_code == 202 and after.json()["id"] == first.json()["id"]
    assert after.json()["status"] == "succeeded"
    assert await count(db, "jobs", tenant.org_id) == 1


# --- the administrators' limits route ----------------------------------------------------------

async def sign_in(client, account, org_id: uuid.UUID | None = None) -> dict[str, str]:
    body = {"username": account.username, "password": account.password}
    if org_id is not None:
        body["organization_id"] = str(org_id)
    response = await client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_only_a_superuser_sets_organization_limits_and_null_restores_the_default(stack, tenant, owner, db,
                                                                                       anonymous):
    path = f"/api/v1/admin/organizations/{tenant.org_id}/limits"
    org_owner = await make_user("org-owner", org_id=tenant.org_id, role=Role.OWNER)
    as_owner = await sign_in(anonymous, org_owner, tenant.org_id)
    refused = await anonymous.patch(path, json={"rate_limit_per_minute": 7}, headers=as_owner)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    by_key = await owner.patch(path, json={"rate_limit_per_minute": 7})
    assert by_key.status_code == 403 and by_key.json()["error"]["code"] == "user_required"
    assert await db("SELECT limits FROM organizations WHERE id = :o", o=tenant.org_id) == [({},)]

    as_root = await sign_in(anonymous, await make_user("root", superuser=True))
    changed = await anonymous.patch(path, json={"rate_limit_per_minute": 7, "batch_items": 5}, headers=as_root)
    assert changed.status_code == 200 and changed.json()["limits"] == {"rate_limit_per_minute": 7, "batch_items": 5}
    assert (await owner.get("/api/v1/jobs")).headers["x-ratelimit-limit"] == "7"

    restored = await anonymous.patch(path, json={"rate_limit_per_minute": None}, headers=as_root)
    assert restored.status_code == 200 and restored.json()["limits"] == {"batch_items": 5}
    assert await db("SELECT limits FROM organizations WHERE id = :o", o=tenant.org_id) == [({"batch_items": 5},)]
    assert (await owner.get("/api/v1/jobs")).headers["x-ratelimit-limit"] == str(default(stack, "rate_limit_owner"))
