"""The role matrix, generated from the route table: every route × every role × API key or signed-in user.

A role without the route's permission (`route_guard(route).permission`, granted per
`schemas.permissions.ROLE_PERMISSIONS`) gets 403 `permission_denied`; a role with it is never refused
(401/403), whatever else the random ids lead to (404, 409, 422 …). Each case runs in a throwaway
organization of its own, so deleting it, leaving it or signing out breaks no other case.
"""

from __future__ import annotations

import httpx
import pytest

from schemas.permissions import ROLE_ORDER, ROLE_PERMISSIONS, Permission, Role, can_grant
from tests.support.accounts import access_headers
from tests.support.routes import WEBSOCKET, Endpoint, call, endpoints, fresh_ids, socket_exchange, socket_url
from tests.support.tenants import make_user

CREDENTIALS = ["key", "user"]


def expected_refusal(endpoint: Endpoint, role: Role, credential: str) -> str | None:
    """The error code the matrix says this caller gets, or None when it may call the route."""
    guard = endpoint.guard
    if guard.user_only and credential == "key":
        return "user_required"
    if guard.permission is None or guard.permission in ROLE_PERMISSIONS[role]:
        return None
    return "permission_denied"


@pytest.fixture
async def caller_headers(request, tenant) -> dict[str, str]:
    role, credential = request.node.callspec.params["role"], request.node.callspec.params["credential"]
    if credential == "key":
        return tenant.headers(role)
    user = await make_user(f"roles-{role.value}", org_id=tenant.org_id, role=role)
    return access_headers(user.id, tenant.org_id)


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
@pytest.mark.parametrize("endpoint", [pytest.param(e, id=e.id) for e in endpoints() if not e.public])
async def test_each_role_gets_exactly_the_routes_its_permissions_allow(endpoint, role, credential, caller_headers,
                                                                       tenant, stack):
    refusal = expected_refusal(endpoint, role, credential)
    if endpoint.method == WEBSOCKET:
        reply = await socket_exchange(socket_url(stack.api_url), caller_headers, {"action": "ping"},
                                      until=lambda f: f["type"] == "pong")
        if refusal:
            assert [f.get("code") for f in reply.frames] == [refusal] and reply.close_code == 4403, reply
        else:
            assert [f["type"] for f in reply.frames] == ["pong"], reply
        return
    async with httpx.AsyncClient(base_url=stack.api_url, headers=caller_headers, timeout=30) as client:
        reply = await call(client, endpoint, fresh_ids(org_id=tenant.org_id))
    if refusal:
        assert reply.status == 403 and reply.code == refusal, reply.text
        if refusal == "permission_denied":
            assert reply.text.count(endpoint.guard.permission.value) >= 1
    else:
        assert reply.status not in (401, 403) and reply.status < 500, reply.text


def test_no_organization_role_grants_service_administration():
    # So the matrix above expects 403 on every admin route for every role, owners included.
    assert all(Permission.USERS_ADMIN not in granted for granted in ROLE_PERMISSIONS.values())
    assert any(e.admin for e in endpoints())


@pytest.mark.parametrize("granter", [Role.ADMIN, Role.OWNER], ids=lambda r: r.value)
@pytest.mark.parametrize("wanted", ROLE_ORDER, ids=lambda r: r.value)
async def test_nobody_creates_a_key_or_adds_a_member_above_their_own_role(granter, wanted, tenant, stack):
    newcomer = await make_user("newcomer")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(granter), timeout=30) as client:
        key = await client.post("/api/v1/api-keys", json={"name": "granted", "role": wanted.value})
        member = await client.post(f"/api/v1/organizations/{tenant.org_id}/members",
                                   json={"username": newcomer.username, "role": wanted.value})
    for response in (key, member):
        if can_grant(granter, wanted):
            assert response.status_code == 201 and response.json()["role"] == wanted.value, response.text
        else:
            assert response.status_code == 403 and response.json()["error"]["code"] == "role_too_high", response.text
