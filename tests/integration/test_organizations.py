"""Organizations through the real API: creation, members and their roles, the last owner, deletion."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest

from schemas.permissions import Role
from tests.support.accounts import (
    bearer,
    login_allowance,  # noqa: F401 (a fixture)
    sign_in,
)
from tests.support.tenants import Account, make_user

pytestmark = pytest.mark.usefixtures("login_allowance")


@dataclass
class SignedIn:
    account: Account
    token: str

    def headers(self, org_id: uuid.UUID | str | None = None) -> dict[str, str]:
        return bearer(self.token, uuid.UUID(str(org_id)) if org_id else None)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def signed_in(http, prefix: str) -> SignedIn:
    account = await make_user(prefix)
    return SignedIn(account, (await sign_in(http, account))["access_token"])


async def create_org(http, owner: SignedIn, name: str | None = None) -> dict:
    response = await http.post("/api/v1/organizations", headers=owner.headers(), json={"name": name or unique("org")})
    assert response.status_code == 201, response.text
    return response.json()


async def add_member(http, org: dict, by: dict[str, str], member: SignedIn, role: Role):
    return await http.post(f"/api/v1/organizations/{org['id']}/members", headers=by,
                           json={"username": member.account.username, "role": role.value})


async def join(http, org: dict, owner: SignedIn, prefix: str, role: Role) -> SignedIn:
    member = await signed_in(http, prefix)
    response = await add_member(http, org, owner.headers(org["id"]), member, role)
    assert response.status_code == 201, response.text
    return member


async def roles_in(http, org: dict, who: SignedIn) -> dict[str, str]:
    response = await http.get(f"/api/v1/organizations/{org['id']}/members", headers=who.headers(org["id"]))
    assert response.status_code == 200, response.text
    return {m["username"]: m["role"] for m in response.json()}


async def my_orgs(http, who: SignedIn) -> dict[str, str]:
    me = await http.get("/api/v1/auth/me", headers=who.headers())
    assert me.status_code == 200, me.text
    return {m["organization_id"]: m["role"] for m in me.json()["organizations"]}


async def ingest(http, headers, scope):
    return await http.post("/api/v1/memories", headers=headers, json={"items": [{"content": "a fact"}],
                                                                       "user_id": scope})


async def test_a_signed_in_user_creates_an_organization_and_is_its_owner(anonymous):
    owner = await signed_in(anonymous, "founder")
    name = unique("Acme")
    org = await create_org(anonymous, owner, f"  {name}  ")
    assert org["name"] == name and org["role"] == "owner"

    assert await my_orgs(anonymous, owner) == {org["id"]: "owner"}
    listed = (await anonymous.get("/api/v1/organizations", headers=owner.headers())).json()
    assert [(o["id"], o["role"]) for o in listed] == [(org["id"], "owner")]
    fetched = await anonymous.get(f"/api/v1/organizations/{org['id']}", headers=owner.headers())
    assert fetched.status_code == 200 and fetched.json()["name"] == name
    assert await roles_in(anonymous, org, owner) == {owner.account.username: "owner"}


async def test_the_next_sign_in_acts_for_the_users_organization_by_default(anonymous, scope, db):
    owner = await signed_in(anonymous, "defaulted")
    org = await create_org(anonymous, owner)
    tokens = await sign_in(anonymous, owner.account)
    assert tokens["organization_id"] == org["id"]
    response = await ingest(anonymous, bearer(tokens["access_token"]), scope)
    assert response.status_code == 202, response.text
    [[job_org, actor]] = await db("SELECT org_id, actor FROM jobs WHERE id = :j", j=response.json()["id"])
    assert str(job_org) == org["id"] and actor == f"user:{owner.account.id}"


async def test_an_organization_name_is_unique_whatever_the_case(anonymous, db):
    owner = await signed_in(anonymous, "namer")
    org = await create_org(anonymous, owner)
    other = await signed_in(anonymous, "copier")
    clash = await anonymous.post("/api/v1/organizations", headers=other.headers(), json={"name": org["name"].upper()})
    assert_error(clash, 409, "organization_name_taken")
    assert await my_orgs(anonymous, other) == {}
    [[count]] = await db("SELECT count(*) FROM organizations WHERE lower(name) = lower(:n)", n=org["name"])
    assert count == 1


async def test_an_api_key_cant_create_organizations(anonymous, tenant, db):
    name = unique("keymade")
    response = await anonymous.post("/api/v1/organizations", headers=tenant.headers(), json={"name": name})
    assert_error(response, 403, "user_required")
    assert await db("SELECT 1 FROM organizations WHERE name = :n", n=name) == []


async def test_a_member_acts_in_the_organization_with_their_role_enforced(anonymous, scope):
    owner = await signed_in(anonymous, "boss")
    org = await create_org(anonymous, owner)
    viewer = await join(anonymous, org, owner, "watcher", Role.VIEWER)
    headers = viewer.headers(org["id"])

    assert (await anonymous.get("/api/v1/memories", headers=headers)).status_code == 200
    error = assert_error(await ingest(anonymous, headers, scope), 403, "permission_denied")
    assert error["details"] == {"permission": "memories:write", "role": "viewer"}
    assert await my_orgs(anonymous, viewer) == {org["id"]: "viewer"}

    # Without the header, a token issued before the user joined acts for their only organization, as a viewer.
    assert (await anonymous.get("/api/v1/memories", headers=viewer.headers())).status_code == 200
    assert_error(await ingest(anonymous, viewer.headers(), scope), 403, "permission_denied")


async def test_a_new_organization_is_usable_at_once_with_the_token_that_created_it(anonymous, scope):
    founder = await signed_in(anonymous, "founder")  # signed in with no organization yet
    assert_error(await anonymous.get("/api/v1/memories", headers=founder.headers()), 403, "no_organization")
    await create_org(anonymous, founder)

    assert (await ingest(anonymous, founder.headers(), scope)).status_code == 202

    # In two organizations that token no longer guesses: the caller names one.
    second = await create_org(anonymous, founder)
    assert_error(await anonymous.get("/api/v1/memories", headers=founder.headers()), 403, "no_organization")
    assert (await anonymous.get("/api/v1/memories", headers=founder.headers(second["id"]))).status_code == 200


async def test_a_role_change_takes_effect_on_the_next_request(anonymous, scope):
    owner = await signed_in(anonymous, "promoter")
    org = await create_org(anonymous, owner)
    member = await join(anonymous, org, owner, "promoted", Role.VIEWER)
    headers = member.headers(org["id"])
    assert (await ingest(anonymous, headers, scope)).status_code == 403

    response = await anonymous.patch(f"/api/v1/organizations/{org['id']}/members/{member.account.id}",
                                     headers=owner.headers(org["id"]), json={"role": "member"})
    assert response.status_code == 200 and response.json()["role"] == "member"
    assert (await ingest(anonymous, headers, scope)).status_code == 202
    assert (await roles_in(anonymous, org, owner))[member.account.username] == "member"


async def test_adding_an_unknown_user_or_a_member_twice_is_refused(anonymous):
    owner = await signed_in(anonymous, "adder")
    org = await create_org(anonymous, owner)
    member = await join(anonymous, org, owner, "twice", Role.MEMBER)
    again = await add_member(anonymous, org, owner.headers(org["id"]), member, Role.ADMIN)
    assert_error(again, 409, "already_member")
    assert (await roles_in(anonymous, org, owner))[member.account.username] == "member"
    unknown = await anonymous.post(f"/api/v1/organizations/{org['id']}/members", headers=owner.headers(org["id"]),
                                   json={"username": unique("ghost"), "role": "member"})
    assert_error(unknown, 404, "not_found")


async def test_an_admin_cant_grant_or_touch_the_owner_role(anonymous):
    owner = await signed_in(anonymous, "top")
    org = await create_org(anonymous, owner)
    admin = await join(anonymous, org, owner, "deputy", Role.ADMIN)
    by_admin = admin.headers(org["id"])

    newcomer = await signed_in(anonymous, "newcomer")
    assert_error(await add_member(anonymous, org, by_admin, newcomer, Role.OWNER), 403, "role_too_high")
    assert_error(await anonymous.patch(f"/api/v1/organizations/{org['id']}/members/{admin.account.id}",
                                       headers=by_admin, json={"role": "owner"}), 403, "role_too_high")
    assert_error(await anonymous.patch(f"/api/v1/organizations/{org['id']}/members/{owner.account.id}",
                                       headers=by_admin, json={"role": "member"}), 403, "role_too_high")
    assert_error(await anonymous.delete(f"/api/v1/organizations/{org['id']}/members/{owner.account.id}",
                                        headers=by_admin), 403, "role_too_high")
    assert await roles_in(anonymous, org, owner) == {owner.account.username: "owner",
                                                     admin.account.username: "admin"}

    response = await add_member(anonymous, org, by_admin, newcomer, Role.ADMIN)
    assert response.status_code == 201 and response.json()["role"] == "admin"


async def test_a_member_cant_manage_members(anonymous):
    owner = await signed_in(anonymous, "chief")
    org = await create_org(anonymous, owner)
    member = await join(anonymous, org, owner, "plain", Role.MEMBER)
    newcomer = await signed_in(anonymous, "hopeful")
    assert_error(await add_member(anonymous, org, member.headers(org["id"]), newcomer, Role.VIEWER),
                 403, "permission_denied")
    assert newcomer.account.username not in await roles_in(anonymous, org, owner)


async def test_the_last_owner_cant_leave_or_be_demoted_until_there_is_another(anonymous):
    owner = await signed_in(anonymous, "captain")
    org = await create_org(anonymous, owner)
    mine = owner.headers(org["id"])
    myself = f"/api/v1/organizations/{org['id']}/members/{owner.account.id}"

    assert_error(await anonymous.post(f"/api/v1/organizations/{org['id']}/leave", headers=mine), 409, "last_owner")
    assert_error(await anonymous.patch(myself, headers=mine, json={"role": "admin"}), 409, "last_owner")
    assert_error(await anonymous.delete(myself, headers=mine), 409, "last_owner")
    assert await my_orgs(anonymous, owner) == {org["id"]: "owner"}

    successor = await join(anonymous, org, owner, "successor", Role.OWNER)
    demoted = await anonymous.patch(myself, headers=mine, json={"role": "admin"})
    assert demoted.status_code == 200 and demoted.json()["role"] == "admin"
    assert (await anonymous.post(f"/api/v1/organizations/{org['id']}/leave", headers=mine)).status_code == 204
    assert await my_orgs(anonymous, owner) == {}
    assert await roles_in(anonymous, org, successor) == {successor.account.username: "owner"}


async def test_one_of_two_owners_can_leave(anonymous):
    owner = await signed_in(anonymous, "first")
    org = await create_org(anonymous, owner)
    second = await join(anonymous, org, owner, "second", Role.OWNER)
    assert (await anonymous.post(f"/api/v1/organizations/{org['id']}/leave", headers=owner.headers(org["id"]))
            ).status_code == 204
    assert_error(await anonymous.post(f"/api/v1/organizations/{org['id']}/leave", headers=second.headers(org["id"])),
                 409, "last_owner")


async def test_two_owners_leaving_at_once_leave_one_owner(anonymous):
    owner = await signed_in(anonymous, "twin")
    org = await create_org(anonymous, owner)
    other = await join(anonymous, org, owner, "twin", Role.OWNER)
    responses = await asyncio.gather(*(anonymous.post(f"/api/v1/organizations/{org['id']}/leave",
                                                      headers=who.headers(org["id"])) for who in (owner, other)))
    assert sorted(r.status_code for r in responses) == [204, 409], [r.text for r in responses]
    stayed = owner if responses[1].status_code == 204 else other
    assert list((await roles_in(anonymous, org, stayed)).values()) == ["owner"]


async def test_a_removed_member_gets_404_for_the_organization_on_the_next_request(anonymous):
    owner = await signed_in(anonymous, "remover")
    org = await create_org(anonymous, owner)
    member = await join(anonymous, org, owner, "removed", Role.MEMBER)
    headers = member.headers(org["id"])
    assert (await anonymous.get("/api/v1/memories", headers=headers)).status_code == 200

    response = await anonymous.delete(f"/api/v1/organizations/{org['id']}/members/{member.account.id}",
                                      headers=owner.headers(org["id"]))
    assert response.status_code == 204, response.text
    assert_error(await anonymous.get("/api/v1/memories", headers=headers), 404, "not_found")
    assert_error(await anonymous.get(f"/api/v1/organizations/{org['id']}", headers=member.headers()), 404, "not_found")
    assert await my_orgs(anonymous, member) == {}


async def test_an_organization_is_invisible_to_non_members(anonymous):
    owner = await signed_in(anonymous, "private")
    org = await create_org(anonymous, owner)
    outsider = await signed_in(anonymous, "outsider")
    assert_error(await anonymous.get(f"/api/v1/organizations/{org['id']}", headers=outsider.headers()),
                 404, "not_found")
    assert_error(await anonymous.get("/api/v1/memories", headers=outsider.headers(org["id"])), 404, "not_found")
    login = await anonymous.post("/api/v1/auth/login", json={"username": outsider.account.username,
                                                             "password": outsider.account.password,
                                                             "organization_id": org["id"]})
    assert_error(login, 404, "not_found")


async def test_renaming_an_organization(anonymous):
    owner = await signed_in(anonymous, "renamer")
    org = await create_org(anonymous, owner)
    taken = await create_org(anonymous, owner)
    member = await join(anonymous, org, owner, "bystander", Role.MEMBER)
    path = f"/api/v1/organizations/{org['id']}"
    new_name = unique("Renamed")

    response = await anonymous.patch(path, headers=owner.headers(), json={"name": new_name})
    assert response.status_code == 200 and response.json()["name"] == new_name
    assert (await anonymous.get(path, headers=member.headers())).json()["name"] == new_name
    assert_error(await anonymous.patch(path, headers=owner.headers(), json={"name": taken["name"]}),
                 409, "organization_name_taken")
    assert_error(await anonymous.patch(path, headers=member.headers(), json={"name": unique("nope")}),
                 403, "permission_denied")
    assert (await anonymous.get(path, headers=owner.headers())).json()["name"] == new_name
    same = await anonymous.patch(path, headers=owner.headers(), json={"name": new_name.upper()})
    assert same.status_code == 200 and same.json()["name"] == new_name.upper()


async def test_deleting_an_organization_is_for_owners_and_revokes_its_keys_at_once(anonymous, scope):
    owner = await signed_in(anonymous, "closer")
    org = await create_org(anonymous, owner)
    admin = await join(anonymous, org, owner, "manager", Role.ADMIN)
    path = f"/api/v1/organizations/{org['id']}"
    created = await anonymous.post("/api/v1/api-keys", headers=owner.headers(org["id"]),
                                   json={"name": "service", "role": "member"})
    assert created.status_code == 201, created.text
    key_headers = bearer(created.json()["key"])
    assert (await anonymous.get("/api/v1/memories", headers=key_headers)).status_code == 200

    assert_error(await anonymous.delete(path, headers=admin.headers()), 403, "permission_denied")
    assert (await anonymous.get(path, headers=owner.headers())).status_code == 200
    assert (await anonymous.delete(path, headers=owner.headers())).status_code == 204

    assert_error(await anonymous.get("/api/v1/memories", headers=key_headers), 401, "api_key_revoked")
    assert_error(await ingest(anonymous, key_headers, scope), 401, "api_key_revoked")
    assert_error(await anonymous.get(path, headers=owner.headers()), 404, "not_found")
    assert_error(await anonymous.get("/api/v1/memories", headers=admin.headers(org["id"])), 404, "not_found")
    assert await my_orgs(anonymous, owner) == {} and await my_orgs(anonymous, admin) == {}

    reborn = await create_org(anonymous, owner, org["name"])
    assert reborn["id"] != org["id"] and reborn["name"] == org["name"]


@pytest.mark.parametrize("look_alike,status,code", [
    ("ＡＣＥ-{n}", 409, "organization_name_taken"),        # fullwidth
    ("асе-{n}", 409, "organization_name_taken"),           # Cyrillic а, с, е
    ("ACÉ-{n}", 409, "organization_name_taken"),           # an accent
    ("ace\u0301-{n}", 409, "organization_name_taken"),     # a combining mark
    ("a\u200bce-{n}", 422, "invalid_input"),               # zero-width space
    ("ace-{n}\u202e", 422, "invalid_input"),               # right-to-left override
    ("aсe-{n}", 422, "invalid_input"),                     # Latin and Cyrillic in one word
], ids=["fullwidth", "cyrillic", "accent", "combining mark", "zero-width", "rtl override", "mixed script"])
async def test_an_organization_name_that_looks_like_a_taken_one_is_refused(anonymous, db, look_alike, status, code):
    owner = await signed_in(anonymous, "lookalike")
    n = str(uuid.uuid4().int)[:10]  # digits: no script of their own
    await create_org(anonymous, owner, f"ace-{n}")
    [[before]] = await db("SELECT count(*) FROM organizations")
    response = await anonymous.post("/api/v1/organizations", headers=owner.headers(),
                                    json={"name": look_alike.format(n=n)})
    assert_error(response, status, code)
    assert await db("SELECT count(*) FROM organizations") == [(before,)]


async def test_an_organization_name_is_stored_normalized(anonymous):
    owner = await signed_in(anonymous, "nfkc")
    n = uuid.uuid4().hex[:8]
    org = await create_org(anonymous, owner, f"  Ｌａｂ {n} ")
    assert org["name"] == f"Lab {n}"
