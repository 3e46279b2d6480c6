"""Accounts and sign-in through the real API: registration, tokens and each way they fail, API keys,
service administration. Every refusal carries its own stable code."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from schemas.permissions import Role
from tests.support.accounts import (
    bearer,
    craft_token,
    login_allowance,  # noqa: F401 (a fixture)
    sign_in,
    unsigned_token,
)
from tests.support.tenants import make_user

pytestmark = pytest.mark.usefixtures("login_allowance")

NEW_PASSWORD = "a much longer passphrase"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    return error


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def users_named(db, username: str) -> int:
    [[count]] = await db("SELECT count(*) FROM users WHERE lower(username) = lower(:u)", u=username)
    return count


# Registration

async def test_register_creates_an_account_that_can_sign_in(anonymous, db):
    username = unique("alice")
    response = await anonymous.post("/api/v1/auth/register", json={
        "username": username, "password": "correct horse battery", "email": f"{username}@example.com",
        "full_name": "Alice Example"})
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["username"] == username and user["email"] == f"{username}@example.com"
    assert user["is_active"] is True and user["is_superuser"] is False
    assert "password" not in response.text and "password_hash" not in user
    [[stored_hash]] = await db("SELECT password_hash FROM users WHERE id = :i", i=user["id"])
    assert stored_hash.startswith("$argon2id$")

    tokens = (await anonymous.post("/api/v1/auth/login", json={"username": username,
                                                               "password": "correct horse battery"})).json()
    me = await anonymous.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user["id"]
    assert me.json()["organizations"] == [] and tokens["organization_id"] is None


async def test_register_refuses_a_taken_username_or_email_whatever_the_case(anonymous, db):
    taken = await make_user("taken")
    clash = await anonymous.post("/api/v1/auth/register", json={"username": taken.username.upper(),
                                                                "password": "correct horse battery"})
    assert_error(clash, 409, "username_taken")
    assert await users_named(db, taken.username) == 1

    email_clash = await anonymous.post("/api/v1/auth/register", json={
        "username": unique("fresh"), "password": "correct horse battery", "email": f"{taken.username}@EXAMPLE.com"})
    assert_error(email_clash, 409, "email_taken")


@pytest.mark.parametrize("username,password", [
    ("weak{n}", "short"),
    ("a", "correct horse battery"),
    ("has space{n}", "correct horse battery"),
    ("-leading-dash{n}", "correct horse battery"),
], ids=["password too short", "username too short", "space in username", "username starts with a dash"])
async def test_register_refuses_bad_input_and_creates_nothing(anonymous, db, username, password):
    username = username.format(n=uuid.uuid4().hex[:6])
    response = await anonymous.post("/api/v1/auth/register", json={"username": username, "password": password})
    error = assert_error(response, 422, "invalid_input")
    assert error["details"]
    assert await users_named(db, username) == 0


# Sign-in

async def test_login_with_json_and_with_an_oauth2_form_gives_tokens(anonymous, tenant):
    account = await make_user("signin", org_id=tenant.org_id, role=Role.MEMBER)
    as_json = await anonymous.post("/api/v1/auth/login", json={"username": account.username,
                                                               "password": account.password})
    as_form = await anonymous.post("/api/v1/auth/login", data={"username": account.username,
                                                               "password": account.password})
    assert as_form.request.headers["content-type"] == "application/x-www-form-urlencoded"
    for response in (as_json, as_form):
        assert response.status_code == 200, response.text
        tokens = response.json()
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0
        assert tokens["organization_id"] == str(tenant.org_id)
        me = await anonymous.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
        assert me.status_code == 200 and me.json()["username"] == account.username
    assert as_json.json()["access_token"] != as_form.json()["access_token"]


async def test_login_by_email_works_too(anonymous):
    account = await make_user("byemail")
    response = await anonymous.post("/api/v1/auth/login", json={"username": f"{account.username}@example.com",
                                                                 "password": account.password})
    assert response.status_code == 200, response.text


async def test_wrong_password_and_unknown_user_get_the_same_refusal(anonymous):
    account = await make_user("guarded")
    wrong = await anonymous.post("/api/v1/auth/login", json={"username": account.username, "password": "not it at all"})
    unknown = await anonymous.post("/api/v1/auth/login", json={"username": unique("nobody"),
                                                               "password": account.password})
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_refresh_gives_a_new_pair_and_the_old_refresh_token_then_fails(anonymous):
    account = await make_user("refresher")
    first = await sign_in(anonymous, account)
    response = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    assert (await anonymous.get("/api/v1/auth/me", headers=bearer(second["access_token"]))).status_code == 200

    again = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_error(again, 401, "token_revoked")
    newer = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert newer.status_code == 200, newer.text


async def test_a_refresh_token_sent_twice_at_once_works_only_once(anonymous):
    tokens = await sign_in(anonymous, await make_user("racer"))
    body = {"refresh_token": tokens["refresh_token"]}
    responses = await asyncio.gather(*(anonymous.post("/api/v1/auth/refresh", json=body) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401], [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 401} == {"token_revoked"}


async def test_an_access_token_cant_be_used_to_refresh(anonymous):
    tokens = await sign_in(anonymous, await make_user("wrongway"))
    response = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert_error(response, 401, "token_wrong_type")


async def test_logout_refuses_the_same_access_token_at_once(anonymous):
    tokens = await sign_in(anonymous, await make_user("leaver"))
    headers = bearer(tokens["access_token"])
    response = await anonymous.post("/api/v1/auth/logout", headers=headers,
                                    json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204, response.text
    assert_error(await anonymous.get("/api/v1/auth/me", headers=headers), 401, "token_revoked")
    refresh = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error(refresh, 401, "token_revoked")


# The current account

async def test_patch_me_changes_the_email_and_refuses_one_already_taken(anonymous):
    account = await make_user("mover")
    other = await make_user("squatter")
    headers = bearer((await sign_in(anonymous, account))["access_token"])
    new_email = f"{unique('moved')}@example.org"
    response = await anonymous.patch("/api/v1/auth/me", headers=headers, json={"email": new_email, "full_name": "M"})
    assert response.status_code == 200, response.text
    assert response.json()["email"] == new_email and response.json()["full_name"] == "M"
    assert (await anonymous.get("/api/v1/auth/me", headers=headers)).json()["email"] == new_email

    clash = await anonymous.patch("/api/v1/auth/me", headers=headers, json={"email": f"{other.username}@example.com"})
    assert_error(clash, 409, "email_taken")
    assert (await anonymous.get("/api/v1/auth/me", headers=headers)).json()["email"] == new_email


@pytest.mark.parametrize("current", [None, "not my password"], ids=["missing", "wrong"])
async def test_changing_the_password_needs_the_current_one(anonymous, current):
    account = await make_user("careful")
    headers = bearer((await sign_in(anonymous, account))["access_token"])
    body = {"password": NEW_PASSWORD} | ({"current_password": current} if current else {})
    assert_error(await anonymous.patch("/api/v1/auth/me", headers=headers, json=body), 422, "wrong_password")
    assert (await anonymous.get("/api/v1/auth/me", headers=headers)).status_code == 200
    await sign_in(anonymous, account)


async def test_a_password_change_revokes_earlier_tokens_and_the_new_password_signs_in(anonymous):
    account = await make_user("rotator")
    old = await sign_in(anonymous, account)
    response = await anonymous.patch("/api/v1/auth/me", headers=bearer(old["access_token"]),
                                     json={"password": NEW_PASSWORD, "current_password": account.password})
    assert response.status_code == 200, response.text

    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(old["access_token"])), 401, "token_revoked")
    refresh = await anonymous.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]})
    assert_error(refresh, 401, "token_revoked")
    stale = await anonymous.post("/api/v1/auth/login", json={"username": account.username,
                                                             "password": account.password})
    assert_error(stale, 401, "invalid_credentials")
    fresh = await sign_in(anonymous, account, NEW_PASSWORD)
    assert (await anonymous.get("/api/v1/auth/me", headers=bearer(fresh["access_token"]))).status_code == 200


async def test_delete_me_is_refused_for_an_organizations_only_owner(anonymous, tenant):
    owner = await make_user("soleowner", org_id=tenant.org_id, role=Role.OWNER)
    headers = bearer((await sign_in(anonymous, owner))["access_token"])
    error = assert_error(await anonymous.delete("/api/v1/auth/me", headers=headers), 409, "last_owner")
    assert error["details"]["organization_ids"] == [str(tenant.org_id)]
    assert (await anonymous.get("/api/v1/auth/me", headers=headers)).status_code == 200

    await make_user("coowner", org_id=tenant.org_id, role=Role.OWNER)
    assert (await anonymous.delete("/api/v1/auth/me", headers=headers)).status_code == 204


async def test_two_owners_deleting_their_accounts_at_once_leave_one_owner(anonymous, tenant, db):
    owners = [await make_user("coowner", org_id=tenant.org_id, role=Role.OWNER) for _ in range(2)]
    headers = [bearer((await sign_in(anonymous, owner))["access_token"]) for owner in owners]
    responses = await asyncio.gather(*(anonymous.delete("/api/v1/auth/me", headers=h) for h in headers))
    assert sorted(r.status_code for r in responses) == [204, 409], [r.text for r in responses]
    [[left]] = await db("SELECT count(*) FROM memberships WHERE org_id = :o AND role = 'owner'", o=tenant.org_id)
    assert left == 1


async def test_delete_me_removes_the_account_its_memberships_and_its_sign_in(anonymous, tenant, db):
    account = await make_user("goner", org_id=tenant.org_id, role=Role.MEMBER)
    headers = bearer((await sign_in(anonymous, account))["access_token"])
    assert (await anonymous.delete("/api/v1/auth/me", headers=headers)).status_code == 204

    assert_error(await anonymous.get("/api/v1/auth/me", headers=headers), 401, "token_revoked")
    login = await anonymous.post("/api/v1/auth/login", json={"username": account.username,
                                                             "password": account.password})
    assert_error(login, 401, "invalid_credentials")
    assert await db("SELECT 1 FROM memberships WHERE user_id = :u", u=account.id) == []
    members = await anonymous.get(f"/api/v1/organizations/{tenant.org_id}/members", headers=tenant.headers())
    assert account.username not in {m["username"] for m in members.json()}
    # The name is free again.
    again = await anonymous.post("/api/v1/auth/register", json={"username": account.username,
                                                                "password": account.password})
    assert again.status_code == 201, again.text


async def test_an_owner_of_only_deleted_organizations_can_delete_the_account(anonymous):
    account = await make_user("closer")
    headers = bearer((await sign_in(anonymous, account))["access_token"])
    org = (await anonymous.post("/api/v1/organizations", headers=headers, json={"name": unique("closing")})).json()
    assert (await anonymous.delete(f"/api/v1/organizations/{org['id']}", headers=headers)).status_code == 204
    response = await anonymous.delete("/api/v1/auth/me", headers=headers)
    assert response.status_code == 204, response.text


async def test_me_is_for_users_not_api_keys(anonymous, tenant):
    assert_error(await anonymous.get("/api/v1/auth/me", headers=tenant.headers()), 403, "user_required")


# Access tokens: every failure has its own code

async def test_no_credentials_is_a_401_with_a_challenge(anonymous):
    assert_error(await anonymous.get("/api/v1/auth/me"), 401, "not_authenticated")


async def test_an_expired_token_is_refused(anonymous):
    account = await make_user("expired")
    now = int(time.time())
    token = craft_token(account.id, iat=now - 3600, nbf=now - 3600, exp=now - 60)
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_expired")


async def test_a_token_expired_within_the_clock_skew_leeway_is_accepted(anonymous):
    account = await make_user("skewed")
    now = int(time.time())
    token = craft_token(account.id, iat=now - 600, nbf=now - 600, exp=now - 5)
    response = await anonymous.get("/api/v1/auth/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(account.id)


async def test_a_token_not_valid_yet_is_refused(anonymous):
    account = await make_user("early")
    later = int(time.time()) + 600
    token = craft_token(account.id, nbf=later, exp=later + 600)
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_not_yet_valid")


async def test_a_tampered_signature_is_refused(anonymous):
    account = await make_user("tampered")
    header, payload, signature = craft_token(account.id).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    response = await anonymous.get("/api/v1/auth/me", headers=bearer(f"{header}.{payload}.{flipped}"))
    assert_error(response, 401, "token_invalid")


async def test_a_token_signed_with_another_key_is_refused(anonymous):
    account = await make_user("forged")
    token = craft_token(account.id, key="someone-elses-signing-key-0123456789abcdef")
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_invalid")


async def test_an_unsigned_alg_none_token_is_refused(anonymous):
    account = await make_user("unsigned")
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(unsigned_token(account.id))),
                 401, "token_invalid")


async def test_a_token_for_another_audience_is_refused(anonymous):
    account = await make_user("audience")
    token = craft_token(account.id, aud="some-other-api")
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_wrong_audience")


async def test_a_token_from_another_issuer_is_refused(anonymous):
    account = await make_user("issuer")
    token = craft_token(account.id, iss="someone-else")
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_wrong_issuer")


async def test_a_token_missing_a_required_claim_is_refused(anonymous):
    account = await make_user("partial")
    token = craft_token(account.id, jti=None)
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_invalid")


async def test_a_refresh_token_cant_be_used_as_an_access_token(anonymous):
    tokens = await sign_in(anonymous, await make_user("misuse"))
    response = await anonymous.get("/api/v1/auth/me", headers=bearer(tokens["refresh_token"]))
    assert_error(response, 401, "token_wrong_type")


async def test_garbage_in_the_bearer_header_is_refused(anonymous):
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer("not.a.jwt")), 401, "token_invalid")


# API keys

async def create_key(http, headers, **body):
    response = await http.post("/api/v1/api-keys", headers=headers, json={"name": unique("key"), **body})
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_revoked_key_is_refused_on_the_very_next_request(anonymous, tenant):
    key = await create_key(anonymous, tenant.headers(), role="member")
    headers = bearer(key["key"])
    assert (await anonymous.get("/api/v1/memories", headers=headers)).status_code == 200
    revoked = await anonymous.delete(f"/api/v1/api-keys/{key['id']}", headers=tenant.headers())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_error(await anonymous.get("/api/v1/memories", headers=headers), 401, "api_key_revoked")
    listed = (await anonymous.get("/api/v1/api-keys", headers=tenant.headers())).json()
    assert key["id"] not in {k["id"] for k in listed}
    with_revoked = (await anonymous.get("/api/v1/api-keys?include_revoked=true", headers=tenant.headers())).json()
    assert key["id"] in {k["id"] for k in with_revoked}


async def test_an_expired_key_is_refused(anonymous, tenant, db):
    headers = tenant.headers(Role.MEMBER)
    assert (await anonymous.get("/api/v1/memories", headers=headers)).status_code == 200
    await db("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :k",
             k=tenant.key_ids[Role.MEMBER])
    assert_error(await anonymous.get("/api/v1/memories", headers=headers), 401, "api_key_expired")


async def test_a_key_with_a_future_expiry_works(anonymous, tenant):
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key = await create_key(anonymous, tenant.headers(), role="viewer", expires_at=expires)
    assert (await anonymous.get("/api/v1/memories", headers=bearer(key["key"]))).status_code == 200


@pytest.mark.parametrize("garbage", [
    "amk_0123456789ab_" + "x" * 43,
    "amk_not-a-key",
    "amk_",
], ids=["well formed but unknown", "malformed", "prefix only"])
async def test_a_garbage_api_key_is_refused_as_invalid(anonymous, garbage):
    assert_error(await anonymous.get("/api/v1/memories", headers=bearer(garbage)), 401, "api_key_invalid")
    assert_error(await anonymous.get("/api/v1/memories", headers={"X-API-Key": garbage}), 401, "api_key_invalid")


async def test_a_real_prefix_with_a_wrong_secret_is_refused(anonymous, tenant):
    real = tenant.keys[Role.OWNER]
    forged = real[:-4] + ("aaaa" if not real.endswith("aaaa") else "bbbb")
    assert_error(await anonymous.get("/api/v1/memories", headers=bearer(forged)), 401, "api_key_invalid")


async def test_a_key_scoped_to_reading_can_search_but_not_ingest(anonymous, tenant, scope):
    key = await create_key(anonymous, tenant.headers(), role="member", scopes=["memories:read"])
    assert key["scopes"] == ["memories:read"]
    headers = bearer(key["key"])
    search = await anonymous.post("/api/v1/memories/search", headers=headers, json={"query": "q", "user_id": scope})
    assert search.status_code == 200, search.text
    ingest = await anonymous.post("/api/v1/memories", headers=headers,
                                  json={"items": [{"content": "refused"}], "user_id": scope})
    error = assert_error(ingest, 403, "permission_denied")
    assert error["details"]["permission"] == "memories:write"


async def test_the_key_secret_is_shown_once_and_listings_never_show_it(anonymous, tenant):
    key = await create_key(anonymous, tenant.headers(), role="viewer")
    assert key["key"].startswith(f"amk_{key['prefix']}_") and key["role"] == "viewer"
    response = await anonymous.get("/api/v1/api-keys", headers=tenant.headers())
    assert response.status_code == 200
    listed = {k["id"]: k for k in response.json()}[key["id"]]
    assert listed["prefix"] == key["prefix"] and listed["name"] == key["name"] and listed["role"] == "viewer"
    assert "last_used_at" in listed and "key" not in listed and "secret_hash" not in listed
    secret = key["key"].removeprefix(f"amk_{key['prefix']}_")
    assert secret not in response.text


async def test_last_used_at_is_set_once_a_key_is_used(anonymous, tenant):
    key = await create_key(anonymous, tenant.headers(), role="viewer")
    assert key["last_used_at"] is None
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert (await anonymous.get("/api/v1/memories", headers=bearer(key["key"]))).status_code == 200
    listed = {k["id"]: k for k in (await anonymous.get("/api/v1/api-keys", headers=tenant.headers())).json()}
    last_used = datetime.fromisoformat(listed[key["id"]]["last_used_at"])
    assert last_used >= before


@pytest.mark.parametrize("granter,role", [(Role.ADMIN, "owner"), (Role.MEMBER, "member")],
                         ids=["admin asks for owner", "member lacks keys:manage"])
async def test_nobody_creates_a_key_above_their_role(anonymous, tenant, db, granter, role):
    [[before]] = await db("SELECT count(*) FROM api_keys WHERE org_id = :o", o=tenant.org_id)
    response = await anonymous.post("/api/v1/api-keys", headers=tenant.headers(granter),
                                    json={"name": "too much", "role": role})
    assert_error(response, 403, "role_too_high" if granter is Role.ADMIN else "permission_denied")
    [[after]] = await db("SELECT count(*) FROM api_keys WHERE org_id = :o", o=tenant.org_id)
    assert after == before


async def test_a_scoped_key_can_only_create_keys_within_its_scopes(anonymous, tenant, db):
    manager = await create_key(anonymous, tenant.headers(Role.ADMIN), role="admin", scopes=["keys:manage"])
    headers = bearer(manager["key"])
    [[before]] = await db("SELECT count(*) FROM api_keys WHERE org_id = :o", o=tenant.org_id)
    for body in ({"role": "admin"}, {"role": "viewer"}, {"role": "admin", "scopes": ["keys:manage", "audit:read"]}):
        response = await anonymous.post("/api/v1/api-keys", headers=headers, json={"name": "wider", **body})
        error = assert_error(response, 403, "scope_not_held")
        assert "keys:manage" not in error["details"]["missing"]
    [[after]] = await db("SELECT count(*) FROM api_keys WHERE org_id = :o", o=tenant.org_id)
    assert after == before
    # The audit log stays out of reach of what it could mint.
    assert_error(await anonymous.get("/api/v1/audit-logs", headers=headers), 403, "permission_denied")
    same = await anonymous.post("/api/v1/api-keys", headers=headers,
                                json={"name": "same", "role": "admin", "scopes": ["keys:manage"]})
    assert same.status_code == 201 and same.json()["scopes"] == ["keys:manage"]


async def test_an_admin_cannot_revoke_an_owners_key(anonymous, tenant):
    owner_key = await create_key(anonymous, tenant.headers(Role.OWNER), role="owner")
    response = await anonymous.delete(f"/api/v1/api-keys/{owner_key['id']}", headers=tenant.headers(Role.ADMIN))
    assert_error(response, 403, "role_too_high")
    assert (await anonymous.get("/api/v1/memories", headers=bearer(owner_key["key"]))).status_code == 200
    admin_key = await create_key(anonymous, tenant.headers(Role.OWNER), role="admin")
    revoked = await anonymous.delete(f"/api/v1/api-keys/{admin_key['id']}", headers=tenant.headers(Role.ADMIN))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    by_owner = await anonymous.delete(f"/api/v1/api-keys/{owner_key['id']}", headers=tenant.headers(Role.OWNER))
    assert by_owner.status_code == 200


async def test_an_admin_can_create_an_admin_key(anonymous, tenant):
    key = await create_key(anonymous, tenant.headers(Role.ADMIN), role="admin")
    assert key["role"] == "admin"


# Service administration

async def admin_headers(http) -> dict[str, str]:
    return bearer((await sign_in(http, await make_user("root", superuser=True)))["access_token"])


async def test_a_superuser_lists_users(anonymous):
    headers = await admin_headers(anonymous)
    target = await make_user("listed")
    response = await anonymous.get("/api/v1/admin/users?limit=500", headers=headers)
    assert response.status_code == 200, response.text
    listed = {u["id"]: u for u in response.json()["items"]}
    assert listed[str(target.id)]["username"] == target.username
    assert all("password_hash" not in u for u in listed.values())


async def test_a_deactivated_user_is_refused_at_once_and_can_sign_in_again_when_reactivated(anonymous):
    headers = await admin_headers(anonymous)
    target = await make_user("suspended")
    target_headers = bearer((await sign_in(anonymous, target))["access_token"])

    response = await anonymous.patch(f"/api/v1/admin/users/{target.id}", headers=headers, json={"is_active": False})
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert_error(await anonymous.get("/api/v1/auth/me", headers=target_headers), 401, "user_inactive")
    login = await anonymous.post("/api/v1/auth/login", json={"username": target.username,
                                                             "password": target.password})
    assert_error(login, 401, "user_inactive")
    inactive = (await anonymous.get("/api/v1/admin/users?active=false&limit=500", headers=headers)).json()["items"]
    assert str(target.id) in {u["id"] for u in inactive}

    response = await anonymous.patch(f"/api/v1/admin/users/{target.id}", headers=headers, json={"is_active": True})
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert (await anonymous.get("/api/v1/auth/me", headers=target_headers)).status_code == 200


async def test_a_reset_token_works_once_and_the_new_password_signs_in(anonymous):
    headers = await admin_headers(anonymous)
    target = await make_user("forgetful")
    old = await sign_in(anonymous, target)
    issued = await anonymous.post(f"/api/v1/admin/users/{target.id}/password-reset", headers=headers)
    assert issued.status_code == 200, issued.text
    reset = {"reset_token": issued.json()["reset_token"], "password": NEW_PASSWORD}
    assert issued.json()["expires_in"] > 0

    assert (await anonymous.post("/api/v1/auth/password-reset", json=reset)).status_code == 204
    assert_error(await anonymous.post("/api/v1/auth/password-reset", json=reset), 422, "invalid_reset_token")
    assert_error(await anonymous.get("/api/v1/auth/me", headers=bearer(old["access_token"])), 401, "token_revoked")
    stale = await anonymous.post("/api/v1/auth/login", json={"username": target.username,
                                                             "password": target.password})
    assert_error(stale, 401, "invalid_credentials")
    fresh = await sign_in(anonymous, target, NEW_PASSWORD)
    assert (await anonymous.get("/api/v1/auth/me", headers=bearer(fresh["access_token"]))).status_code == 200


async def test_an_unknown_reset_token_is_refused(anonymous):
    response = await anonymous.post("/api/v1/auth/password-reset",
                                    json={"reset_token": uuid.uuid4().hex, "password": NEW_PASSWORD})
    assert_error(response, 422, "invalid_reset_token")


async def test_admin_routes_refuse_ordinary_users_and_api_keys(anonymous, tenant):
    target = await make_user("bystander", org_id=tenant.org_id, role=Role.OWNER)
    user_headers = bearer((await sign_in(anonymous, target))["access_token"])
    for headers, code in ((user_headers, "permission_denied"), (tenant.headers(Role.OWNER), "user_required")):
        assert_error(await anonymous.get("/api/v1/admin/users", headers=headers), 403, code)
        deactivate = await anonymous.patch(f"/api/v1/admin/users/{target.id}", headers=headers,
                                           json={"is_active": False})
        assert_error(deactivate, 403, code)
        assert_error(await anonymous.post(f"/api/v1/admin/users/{target.id}/password-reset", headers=headers),
                     403, code)
    assert (await anonymous.get("/api/v1/auth/me", headers=user_headers)).json()["is_active"] is True


async def test_whoami_tells_a_key_and_a_user_their_role_and_permissions(as_role, anonymous, tenant):
    viewer = await (as_role(Role.VIEWER)).get("/api/v1/auth/whoami")
    assert viewer.status_code == 200, viewer.text
    body = viewer.json()
    assert body["actor_type"] == "api_key" and body["role"] == "viewer" and body["user_id"] is None
    assert body["organization_id"] == str(tenant.org_id) and body["key_id"]
    assert "memories:read" in body["permissions"] and "memories:write" not in body["permissions"]
    member = await make_user("whoami", org_id=tenant.org_id, role=Role.MEMBER)
    tokens = await sign_in(anonymous, member)
    me = (await anonymous.get("/api/v1/auth/whoami", headers=bearer(tokens["access_token"]))).json()
    assert me["actor_type"] == "user" and me["name"] == member.username and me["role"] == "member"
    assert me["user_id"] == str(member.id) and me["key_id"] is None
    assert "memories:write" in me["permissions"] and "keys:manage" not in me["permissions"]
    assert (await anonymous.get("/api/v1/auth/whoami")).status_code == 401
