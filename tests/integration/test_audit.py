"""The audit log: one row per mutating request and per job outcome, readable by admins of the
organization only, filterable, paginated, and never holding a secret."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import pytest

from schemas.permissions import Role
from tests.support.clients import api_client, loopback_address
from tests.support.sse import TERMINAL, finish, follow, sse_stream
from tests.support.tenants import Tenant, make_user


@pytest.fixture
def address() -> str:
    """The test's own client address, so audit rows can be checked for it."""
    return loopback_address()


def key_actor(tenant: Tenant, role: Role) -> str:
    return f"api_key:{tenant.key_ids[role]}"


async def audit_rows(client, **filters) -> list[dict]:
    """Every audit row the client's organization shows for the filters, newest first."""
    response = await client.get("/api/v1/audit-logs", params={"limit": 500, **filters})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return response.json()["items"]


async def ingest(client, scope: str, *contents: str):
    response = await client.post("/api/v1/memories", json={"items": [{"content": c} for c in contents],
                                                           "user_id": scope})
    assert response.status_code == 202, response.text
    return response


async def sign_in(client, account, org_id: uuid.UUID | None = None) -> dict:
    body = {"username": account.username, "password": account.password}
    if org_id is not None:
        body["organization_id"] = str(org_id)
    response = await client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# --- what a mutation records ---------------------------------------------------------------------

async def test_an_ingest_is_audited_with_the_key_the_job_the_request_id_and_the_address(tenant, owner, scope,
                                                                                        address):
    response = await ingest(owner, scope, "audited one", "audited two")
    # Written before the response left: readable at once, no waiting.
    [row] = await audit_rows(owner, action="ingest_memories")
    assert row["actor"] == key_actor(tenant, Role.OWNER)
    assert (row["target_type"], row["target_id"]) == ("job", response.json()["id"])
    assert (row["result"], row["status_code"]) == ("success", 202)
    assert row["request_id"] == response.headers["x-request-id"]
    assert row["ip"] == address
    assert row["details"] == {"items": 2}
    await finish(owner, response.json()["id"])


async def test_deleting_a_memory_is_audited_and_a_failed_delete_is_a_failure_with_its_status(owner, scope):
    job = await finish(owner, (await ingest(owner, scope, "to be deleted")).json()["id"])
    memory_id = job["result"]["first_memory_id"]
    deleted = await owner.delete(f"/api/v1/memories/{memory_id}")
    assert deleted.status_code == 204
    missing_id = str(uuid.uuid4())
    missing = await owner.delete(f"/api/v1/memories/{missing_id}")
    assert missing.status_code == 404
    rows = {r["target_id"]: r for r in await audit_rows(owner, action="delete_memory")}
    assert rows.keys() == {memory_id, missing_id}
    for target, response, result in ((memory_id, deleted, "success"), (missing_id, missing, "failure")):
        row = rows[target]
        assert (row["target_type"], row["result"], row["status_code"]) == ("memory", result, response.status_code)
        assert row["request_id"] == response.headers["x-request-id"]


async def test_creating_and_revoking_an_api_key_is_audited_without_its_secret(tenant, as_role, db):
    account = await make_user("key-admin", org_id=tenant.org_id, role=Role.ADMIN)
    tokens = await sign_in(as_role(headers={}), account, tenant.org_id)
    as_user = as_role(headers={"Authorization": f"Bearer {tokens['access_token']}"})
    created = await as_user.post("/api/v1/api-keys", json={"name": "ci", "role": "member"})
    assert created.status_code == 201
    key_id, secret = created.json()["id"], created.json()["key"]
    revoked = await as_role(Role.OWNER).delete(f"/api/v1/api-keys/{key_id}")
    assert revoked.status_code == 200

    history = await audit_rows(as_role(Role.OWNER), target_type="api_key", target_id=key_id)
    assert [(r["action"], r["actor"], r["result"], r["status_code"], r["request_id"]) for r in history] == [
        ("revoke_api_key", key_actor(tenant, Role.OWNER), "success", 200, revoked.headers["x-request-id"]),
        ("create_api_key", f"user:{account.id}", "success", 201, created.headers["x-request-id"]),
    ]
    rows = await db("SELECT t::text FROM audit_logs t WHERE target_id = :k", k=key_id)
    assert len(rows) == 2 and not any(secret in text for [text] in rows)
    missing_id = str(uuid.uuid4())
    missing = await as_role(Role.OWNER).delete(f"/api/v1/api-keys/{missing_id}")
    assert missing.status_code == 404
    [failed] = await audit_rows(as_role(Role.OWNER), target_type="api_key", target_id=missing_id)
    assert (failed["action"], failed["result"], failed["status_code"]) == ("revoke_api_key", "failure", 404)


async def test_adding_a_member_is_audited_with_the_account_as_target(tenant, owner):
    account = await make_user("joiner")
    response = await owner.post(f"/api/v1/organizations/{tenant.org_id}/members",
                                json={"username": account.username, "role": "member"})
    assert response.status_code == 201
    [row] = await audit_rows(owner, action="add_member")
    assert (row["actor"], row["target_type"], row["target_id"]) == (key_actor(tenant, Role.OWNER), "member",
                                                                    str(account.id))
    assert (row["result"], row["status_code"], row["details"]) == ("success", 201, {"role": "member"})
    assert row["request_id"] == response.headers["x-request-id"]


async def test_a_failed_sign_in_is_audited_as_an_anonymous_failure_from_the_callers_address(stack, db, address):
    account = await make_user("signin")
    async with api_client(stack.api_url, address=address) as c:
        response = await c.post("/api/v1/auth/login", json={"username": account.username, "password": "wrong"})
    assert response.status_code == 401
    rows = await db("SELECT actor, action, result, status_code, ip FROM audit_logs WHERE request_id = :r",
                    r=response.headers["x-request-id"])
    assert rows == [("anonymous", "login", "failure", 401, address)]


# --- job outcomes --------------------------------------------------------------------------------

async def test_job_outcomes_are_audited_for_the_key_that_submitted_the_job(tenant, as_role, scope):
    member, admin = as_role(Role.MEMBER), as_role(Role.ADMIN)
    succeeds = await ingest(member, scope, "fine")
    fails = await ingest(member, scope, "refused by the model @@reject@@")
    # Five chunks, each slowed down: cancelled at a checkpoint long before the end.
    slow = await ingest(member, scope, *(f"slow {i}" + (" @@slow:0.5@@" if i % 8 == 0 else "") for i in range(40)))
    await follow(member, slow.json()["id"],
                 stop_after=lambda e: e.event == "progress" and e.data["data"]["done"] > 0)
    cancel = await admin.post(f"/api/v1/jobs/{slow.json()['id']}/cancel")
    assert cancel.status_code == 202
    outcomes = {r.json()["id"]: (await finish(member, r.json()["id"]))["status"] for r in (succeeds, fails, slow)}
    assert list(outcomes.values()) == ["succeeded", "failed", "cancelled"]

    rows = {r["target_id"]: r for r in await audit_rows(admin, action="job.")}
    assert rows.keys() == outcomes.keys()
    for submitted, action, result in ((succeeds, "job.succeeded", "success"), (fails, "job.failed", "failure"),
                                      (slow, "job.cancelled", "failure")):
        row = rows[submitted.json()["id"]]
        assert (row["action"], row["result"], row["target_type"]) == (action, result, "job")
        assert row["actor"] == key_actor(tenant, Role.MEMBER)  # whoever cancelled it, the job is the member's
        assert row["request_id"] == submitted.headers["x-request-id"]
        assert row["details"]["kind"] == "ingest_memories"
    assert rows[fails.json()["id"]]["details"]["error_code"] == "embedding_rejected"
    [cancel_row] = await audit_rows(admin, action="cancel_job")
    assert (cancel_row["actor"], cancel_row["target_id"]) == (key_actor(tenant, Role.ADMIN), slow.json()["id"])


# --- reading the log -----------------------------------------------------------------------------

async def test_filters_select_exactly_the_matching_rows_and_pages_return_every_row_once(tenant, as_role, scope):
    owner, admin = as_role(Role.OWNER), as_role(Role.ADMIN)
    failed_deletes = [await owner.delete(f"/api/v1/memories/{uuid.uuid4()}") for _ in range(3)]
    new_key = await admin.post("/api/v1/api-keys", json={"name": "filtered", "role": "viewer"})
    good = await ingest(owner, scope, "filter me")
    bad = await ingest(owner, scope, "reject me @@reject@@")
    for job in (good, bad):
        await finish(owner, job.json()["id"])
    everything = await audit_rows(owner)
    assert len(everything) == 8  # 3 deletes, 1 key, 2 ingests, 2 job outcomes

    def request_ids(rows):
        return {r["request_id"] for r in rows}

    deletes = await audit_rows(owner, action="delete_memory")
    assert request_ids(deletes) == {r.headers["x-request-id"] for r in failed_deletes}
    assert {r["action"] for r in await audit_rows(owner, action="job.")} == {"job.succeeded", "job.failed"}
    assert await audit_rows(owner, action="job") == []  # without the dot, an exact name
    [by_admin] = await audit_rows(owner, actor=key_actor(tenant, Role.ADMIN))
    assert (by_admin["action"], by_admin["target_id"]) == ("create_api_key", new_key.json()["id"])
    failures = await audit_rows(owner, result="failure")
    assert {(r["action"], r["target_id"]) for r in failures} == (
        {("delete_memory", r["target_id"]) for r in deletes} | {("job.failed", bad.json()["id"])})
    assert {r["action"] for r in await audit_rows(owner, target_id=bad.json()["id"])} == {"ingest_memories",
                                                                                        "job.failed"}

    pivot = everything[len(everything) // 2]["created_at"]
    since, until = await audit_rows(owner, since=pivot), await audit_rows(owner, until=pivot)
    at = datetime.fromisoformat(pivot)
    assert [r["id"] for r in since] == [r["id"] for r in everything if datetime.fromisoformat(r["created_at"]) >= at]
    assert [r["id"] for r in until] == [r["id"] for r in everything if datetime.fromisoformat(r["created_at"]) < at]
    assert since and until

    seen, cursor, pages = [], None, 0
    while True:
        page = (await owner.get("/api/v1/audit-logs", params={"limit": 3, **({"cursor": cursor} if cursor else {})}))
        assert page.status_code == 200
        seen += [r["id"] for r in page.json()["items"]]
        pages += 1
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert seen == [r["id"] for r in everything] and pages == 3


@pytest.mark.parametrize(("role", "status"), [(Role.VIEWER, 403), (Role.MEMBER, 403), (Role.ADMIN, 200),
                                              (Role.OWNER, 200)])
async def test_only_admins_and_owners_read_the_audit_log(as_role, role, status):
    response = await as_role(role).get("/api/v1/audit-logs")
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "permission_denied"


async def test_an_organization_never_sees_another_organizations_audit_rows(tenant, other_tenant, as_role):
    target = str(uuid.uuid4())
    mutation = await as_role(Role.OWNER).delete(f"/api/v1/memories/{target}")
    assert [r["request_id"] for r in await audit_rows(as_role(Role.OWNER), target_id=target)] == [
        mutation.headers["x-request-id"]]
    other = as_role(Role.OWNER, other_tenant)
    assert await audit_rows(other, target_id=target) == []
    assert await audit_rows(other, actor=key_actor(tenant, Role.OWNER)) == []
    assert mutation.headers["x-request-id"] not in {r["request_id"] for r in await audit_rows(other)}


# --- secrets -------------------------------------------------------------------------------------

async def wait_for_log_lines(path, request_ids: set[str], timeout: float = 15) -> str:
    """The API log once it has a line for each request id (access lines are written as requests end)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace")
        missing = {r for r in request_ids if f'"request_id": "{r}"' not in text}
        if not missing:
            return text
        assert time.monotonic() < deadline, f"no log line for requests {missing}"
        await asyncio.sleep(0.05)


async def test_no_secret_reaches_the_audit_log_or_the_api_log(stack, tenant, as_role, db, scope):
    account = await make_user("secretive", org_id=tenant.org_id, role=Role.ADMIN)
    new_password = f"new password {uuid.uuid4()}"
    wrong_password = f"wrong password {uuid.uuid4()}"
    prefix = f"secrets-{uuid.uuid4().hex[:12]}-"
    ids = iter(f"{prefix}{n}" for n in range(100))
    used: set[str] = set()

    def rid() -> dict[str, str]:
        used.add(request_id := next(ids))
        return {"X-Request-ID": request_id}

    owner, anonymous = as_role(Role.OWNER), as_role(headers={})
    created = await owner.post("/api/v1/api-keys", json={"name": "secret", "role": "member"}, headers=rid())
    new_key = created.json()["key"]
    job = await as_role(headers={"X-API-Key": new_key}).post(
        "/api/v1/memories", json={"items": [{"content": "secret test"}], "user_id": scope}, headers=rid())
    await finish(owner, job.json()["id"])
    stream_token = (await owner.post("/api/v1/stream-tokens", json={"job_id": job.json()["id"]},
                                     headers=rid())).json()["token"]
    async for event in sse_stream(anonymous, f"/api/v1/jobs/{job.json()['id']}/events?token={stream_token}", rid()):
        if event.event in TERMINAL:
            break
    wrong = await anonymous.post("/api/v1/auth/login", json={"username": account.username,
                                                            "password": wrong_password}, headers=rid())
    assert wrong.status_code == 401
    login = await anonymous.post("/api/v1/auth/login", json={"username": account.username,
                                                            "password": account.password}, headers=rid())
    tokens = login.json()
    as_user = as_role(headers={"Authorization": f"Bearer {tokens['access_token']}"})
    changed = await as_user.patch("/api/v1/auth/me", json={"current_password": account.password,
                                                           "password": new_password}, headers=rid())
    assert changed.status_code == 200, changed.text
    refreshed = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]},
                                     headers=rid())
    assert refreshed.status_code == 401  # the password change signed the old tokens out

    secrets = {"owner key": tenant.keys[Role.OWNER], "new key": new_key, "stream token": stream_token,
               "password": account.password, "new password": new_password, "wrong password": wrong_password,
               "access token": tokens["access_token"], "refresh token": tokens["refresh_token"]}
    [[audit_text]] = await db("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM audit_logs t")
    ours = await db("SELECT action FROM audit_logs WHERE request_id LIKE :p ORDER BY action", p=f"{prefix}%")
    assert [a for [a] in ours] == sorted(["create_api_key", "ingest_memories", "job.succeeded", "create_stream_token",
                                          "login", "login", "update_me", "refresh"])
    log_text = await wait_for_log_lines(stack.log_dir / "api.log", used)
    for name, secret in secrets.items():
        assert secret not in audit_text, f"the {name} is in the audit log"
        assert secret not in log_text, f"the {name} is in the API log"
