"""Organizations are isolated: generated from the route table, every route is called by another
organization's owner with this organization's ids, and answers as if they did not exist.

Organization A (`org_a`, shared by the module) holds a memory with a unique marker, a finished job,
a member account and API keys. Organization B is fresh for every case. After each call, A's rows must
be exactly as they were.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import httpx
import pytest

from core.events import org_stream
from core.redis import get_redis
from schemas.permissions import Role
from tests.support.accounts import access_headers
from tests.support.routes import WEBSOCKET, call, endpoints, fresh_ids, socket_exchange, socket_url
from tests.support.sse import TERMINAL, finish, read_sse
from tests.support.tenants import Account, Tenant, make_tenant, make_user

ADMIN_SKIP = ("admin routes answer 403 to every non-superuser whatever the ids: "
              "test_admin_routes_are_403_for_another_orgs_owner asserts that")
PUBLIC_SKIP = "public route: serves no organization's data"
CREDENTIALS = ["owner key", "owner user"]
# Routes to one thing of the caller's organization that it may not have yet: B, fresh, gets their own 404.
SINGLETONS = {"GET /api/v1/llm/configs/default": "no_default_llm_config"}
# Routes whose path names a place in the caller's own namespace (a workspace file, a maintenance task):
# B writing at A's path writes B's own file there, and A's stays as it was; B runs a task for itself.
OWN_NAMESPACE = {"PUT /api/v1/files/{path}": 201, "POST /api/v1/maintenance/{task}": 202}


@dataclass
class World:
    """Organization A and the things of it that B must never see or touch."""

    tenant: Tenant
    member: Account
    memory_id: str
    job_id: str
    marker: str
    scope: str
    config_id: str
    provider_key: str
    agent_id: str = ""
    block_id: str = ""
    conversation_id: str = ""
    file_path: str = ""
    source_id: str = ""
    webhook_id: str = ""
    webhook_secret: str = ""
    schedule_id: str = ""

    def ids(self) -> dict:
        return fresh_ids(memory_id=self.memory_id, job_id=self.job_id, key_id=self.tenant.key_ids[Role.MEMBER],
                         org_id=self.tenant.org_id, organization_id=self.tenant.org_id, user_id=self.member.id,
                         username=self.member.username, config_id=self.config_id, agent_id=self.agent_id,
                         block_id=self.block_id, conversation_id=self.conversation_id, path=self.file_path,
                         source_id=self.source_id, webhook_id=self.webhook_id, schedule_id=self.schedule_id)

    def secrets(self) -> set[str]:
        """Everything of A's that could show up in a response."""
        keys = self.tenant.keys.values()
        return ({self.memory_id, self.job_id, str(self.tenant.org_id), self.tenant.name, str(self.member.id),
                 self.member.username, self.marker, self.scope, self.config_id, self.provider_key,
                 self.agent_id, self.block_id, self.conversation_id, self.source_id, self.webhook_id,
                 self.webhook_secret, self.schedule_id}
                | {str(k) for k in self.tenant.key_ids.values()} | {k.split("_")[1] for k in keys} | set(keys))


@pytest.fixture(scope="module")
async def org_a(stack) -> World:
    tenant = await make_tenant("iso-a")
    marker, scope = f"marker-{uuid.uuid4().hex}", f"iso-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as client:
        response = await client.post("/api/v1/memories", json={
            "items": [{"content": f"The vault combination is {marker}"}], "user_id": scope})
        assert response.status_code == 202, response.text
        job = await finish(client, response.json()["id"])
        assert job["status"] == "succeeded", job
        [memory] = (await client.get("/api/v1/memories", params={"user_id": scope})).json()["items"]
        provider_key = f"sk-iso-{uuid.uuid4().hex}"
        config = await client.post("/api/v1/llm/configs", json={
            "name": f"iso-{marker}", "model": "m", "base_url": stack.model_url + "/v1", "api_key": provider_key,
            "is_default": True})
        assert config.status_code == 201, config.text
        block = await client.post("/api/v1/blocks", json={"label": "human", "value": f"Knows {marker}"})
        assert block.status_code == 201, block.text
        agent = await client.post("/api/v1/agents", json={"name": f"iso-{marker}", "block_ids": [block.json()["id"]]})
        assert agent.status_code == 201, agent.text
        conversation = await client.post(f"/api/v1/agents/{agent.json()['id']}/conversations",
                                         json={"title": f"about {marker}"})
        assert conversation.status_code == 201, conversation.text
        said = await client.post(f"/api/v1/conversations/{conversation.json()['id']}/messages",
                                 json={"content": f"Remember {marker}", "respond": False})
        assert said.status_code == 201, said.text
        file_path = f"iso/{marker}.txt"
        uploaded = await client.put(f"/api/v1/files/{file_path}", content=f"The file knows {marker}".encode())
        assert uploaded.status_code == 201, uploaded.text
        source = await client.post("/api/v1/sources", data={"user_id": scope}, files={
            "file": ("vault.md", f"# Vault\n\nThe vault combination is {marker}.".encode(), "text/markdown")})
        assert source.status_code == 202, source.text
        assert (await finish(client, source.json()["job_id"]))["status"] == "succeeded"
        schedule = await client.post("/api/v1/schedules", json={"name": f"iso-{marker}", "task": "integrity",
                                                                 "cron": "0 5 * * *"})
        assert schedule.status_code == 201, schedule.text
        # Last: no later event of A's reaches it (a public address literal, never called).
        webhook = await client.post("/api/v1/webhooks", json={"url": f"http://93.184.216.34:9/{marker}"})
        assert webhook.status_code == 201, webhook.text
    member = await make_user("iso-member", org_id=tenant.org_id, role=Role.MEMBER)
    return World(tenant, member, memory["id"], job["id"], marker, scope, config.json()["id"], provider_key,
                 agent_id=agent.json()["id"], block_id=block.json()["id"],
                 conversation_id=conversation.json()["id"], file_path=file_path, source_id=source.json()["id"],
                 webhook_id=webhook.json()["id"], webhook_secret=webhook.json()["secret"],
                 schedule_id=schedule.json()["id"])


STATE_SQL = """
SELECT 'organization', to_jsonb(o)::text FROM organizations o WHERE o.id = :org
UNION ALL SELECT 'membership', to_jsonb(m)::text FROM memberships m WHERE m.org_id = :org
UNION ALL SELECT 'user', to_jsonb(u)::text FROM users u JOIN memberships m ON m.user_id = u.id WHERE m.org_id = :org
UNION ALL SELECT 'api_key', (to_jsonb(k) - 'last_used_at')::text FROM api_keys k WHERE k.org_id = :org
UNION ALL SELECT 'memory', (to_jsonb(x) - 'embedding')::text FROM memories x WHERE x.org_id = :org
UNION ALL SELECT 'job', to_jsonb(j)::text FROM jobs j WHERE j.org_id = :org
UNION ALL SELECT 'audit', to_jsonb(a)::text FROM audit_logs a WHERE a.org_id = :org
UNION ALL SELECT 'llm_config', to_jsonb(c)::text FROM llm_configs c WHERE c.org_id = :org
UNION ALL SELECT 'agent', to_jsonb(g)::text FROM agents g WHERE g.org_id = :org
UNION ALL SELECT 'block', to_jsonb(b)::text FROM blocks b WHERE b.org_id = :org
UNION ALL SELECT 'block_version', to_jsonb(v)::text FROM block_versions v WHERE v.org_id = :org
UNION ALL SELECT 'agent_block', to_jsonb(ab)::text FROM agent_blocks ab WHERE ab.org_id = :org
UNION ALL SELECT 'conversation', to_jsonb(c)::text FROM conversations c WHERE c.org_id = :org
UNION ALL SELECT 'message', (to_jsonb(x) - 'embedding')::text FROM messages x WHERE x.org_id = :org
UNION ALL SELECT 'mcp_server', to_jsonb(m)::text FROM mcp_servers m WHERE m.org_id = :org
UNION ALL SELECT 'source', to_jsonb(s)::text FROM sources s WHERE s.org_id = :org
UNION ALL SELECT 'webhook', to_jsonb(w)::text FROM webhooks w WHERE w.org_id = :org
UNION ALL SELECT 'webhook_delivery', to_jsonb(d)::text FROM webhook_deliveries d WHERE d.org_id = :org
UNION ALL SELECT 'schedule', to_jsonb(s)::text FROM schedules s WHERE s.org_id = :org
ORDER BY 1, 2
"""


async def files_of(stack, world: World) -> dict[str, bytes]:
    """Organization A's workspace files and their bytes, read from the disk."""
    root = stack.services.data_dir / "workspaces" / str(world.tenant.org_id)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".save-")}


async def state_of(db, org_id) -> list:
    """Every row of the organization (its members' accounts included), for before/after comparison."""
    return [tuple(row) for row in await db(STATE_SQL, org=org_id)]


@dataclass
class Caller:
    client: httpx.AsyncClient
    credential: str
    headers: dict[str, str]


@pytest.fixture
async def as_b(request, stack, other_tenant) -> Caller:
    """Organization B's owner, with an API key or as a signed-in user."""
    if request.param == "owner key":
        headers = other_tenant.headers(Role.OWNER)
    else:
        owner = await make_user("iso-b-owner", org_id=other_tenant.org_id, role=Role.OWNER)
        headers = access_headers(owner.id, other_tenant.org_id)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as client:
        yield Caller(client, request.param, headers)


def leaked(text: str, world: World, sent: str) -> set[str]:
    """A's secrets in a response, except what the caller itself sent (an error may name the id asked for)."""
    return {s for s in world.secrets() if s in text and s not in sent}


def cases(*, targeting: bool) -> list:
    """Endpoints that name a row (an id in the path or body; the socket subscribes to a job), or none."""
    params = []
    for endpoint in endpoints():
        if (bool(endpoint.targets) or endpoint.method == WEBSOCKET) != targeting:
            continue
        marks = ([pytest.mark.skip(reason=PUBLIC_SKIP)] if endpoint.public
                 else [pytest.mark.skip(reason=ADMIN_SKIP)] if endpoint.admin else [])
        params.append(pytest.param(endpoint, id=endpoint.id, marks=marks))
    return params


@pytest.mark.parametrize("as_b", CREDENTIALS, indirect=True)
@pytest.mark.parametrize("endpoint", cases(targeting=True))
async def test_other_org_gets_404_for_every_route_with_an_id(endpoint, as_b, org_a, stack, db):
    before = await state_of(db, org_a.tenant.org_id)
    ids = org_a.ids()
    if endpoint.method == WEBSOCKET:
        # The socket itself is B's to open; following A's job on it is what must fail.
        reply = await socket_exchange(socket_url(stack.api_url), as_b.headers, {
            "action": "subscribe", "job_id": org_a.job_id}, until=lambda f: f["type"] == "error")
        # The subscription is acknowledged, then ends on loading the job: no snapshot, no event.
        assert [f["type"] for f in reply.frames] in (["error"], ["subscribed", "error"]), reply.frames
        assert reply.frames[-1]["code"] == "not_found" and reply.frames[-1]["job_id"] == org_a.job_id
        assert reply.close_code is None
        text, sent = str(reply.frames), org_a.job_id
    elif endpoint.id in OWN_NAMESPACE:
        reply = await call(as_b.client, endpoint, ids)
        assert reply.status == OWN_NAMESPACE[endpoint.id], reply.text
        text, sent = reply.text, endpoint.url(ids)
    else:
        reply = await call(as_b.client, endpoint, ids)
        # `not_found`, or the resource's own code (`conversation_not_found`, `model_not_found`, `file_not_found`).
        assert reply.status == 404 and reply.code is not None and reply.code.endswith("not_found"), reply.text
        text, sent = reply.text, endpoint.url(ids) + str(endpoint.body(ids))
    assert not leaked(text, org_a, sent)
    assert await state_of(db, org_a.tenant.org_id) == before
    assert await files_of(stack, org_a) == {org_a.file_path: f"The file knows {org_a.marker}".encode()}


@pytest.mark.parametrize("as_b", CREDENTIALS, indirect=True)
@pytest.mark.parametrize("endpoint", cases(targeting=False))
async def test_other_org_lists_and_searches_show_none_of_this_orgs_data(endpoint, as_b, org_a, db):
    before = await state_of(db, org_a.tenant.org_id)
    # B's own scope and query are A's marker and scope: a filter that ignored the organization would find A's memory.
    ids = fresh_ids(scope=org_a.scope, query=f"The vault combination is {org_a.marker}")
    reply = await call(as_b.client, endpoint, ids)
    if endpoint.guard.user_only and as_b.credential == "owner key":
        assert reply.status == 403 and reply.code == "user_required", reply.text
    elif endpoint.id in SINGLETONS:
        assert reply.status == 404 and reply.code == SINGLETONS[endpoint.id], reply.text
    elif endpoint.method == "GET" or endpoint.path.endswith("/search"):
        assert reply.status == 200, reply.text
    else:
        assert reply.status < 500 and reply.status not in (401, 403), reply.text
    assert not leaked(reply.text, org_a, sent=str(endpoint.body(ids)))
    assert await state_of(db, org_a.tenant.org_id) == before


@pytest.mark.parametrize("as_b", CREDENTIALS, indirect=True)
@pytest.mark.parametrize("endpoint", [pytest.param(e, id=e.id) for e in endpoints() if e.admin])
async def test_admin_routes_are_403_for_another_orgs_owner(endpoint, as_b, org_a, db):
    before = await state_of(db, org_a.tenant.org_id)
    reply = await call(as_b.client, endpoint, org_a.ids())
    # An API key is never a superuser; a signed-in owner of an organization isn't one either.
    assert reply.status == 403, reply.text
    assert reply.code == ("user_required" if as_b.credential == "owner key" else "permission_denied")
    assert await state_of(db, org_a.tenant.org_id) == before


async def test_patching_another_orgs_memory_enqueues_no_job(stack, org_a, other_tenant, db):
    count = "SELECT count(*) FROM jobs WHERE org_id = :org"
    [[a_jobs]], [[b_jobs]] = await db(count, org=org_a.tenant.org_id), await db(count, org=other_tenant.org_id)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers()) as b:
        response = await b.patch(f"/api/v1/memories/{org_a.memory_id}", json={"content": "overwritten by B"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert await db(count, org=org_a.tenant.org_id) == [(a_jobs,)]
    assert await db(count, org=other_tenant.org_id) == [(b_jobs,)]
    [[content]] = await db("SELECT content FROM memories WHERE id = :m", m=org_a.memory_id)
    assert org_a.marker in content


async def test_org_stream_of_another_org_never_delivers_this_orgs_events(stack, tenant, other_tenant, scope):
    async with (httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as a,
                httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(),
                                  timeout=httpx.Timeout(30, read=60)) as b,
                b.stream("GET", "/api/v1/events") as stream):
        # The status comes after the stream's start position is fixed: everything from now on is delivered.
        assert stream.status_code == 200
        a_job = (await a.post("/api/v1/memories", json={"items": [{"content": "A's work"}], "user_id": scope})).json()
        assert (await finish(a, a_job["id"]))["status"] == "succeeded"
        b_job = (await b.post("/api/v1/memories", json={"items": [{"content": "B's work"}], "user_id": scope})).json()
        seen = []

        async def until_b_finishes() -> None:
            async for event in read_sse(stream):
                seen.append(event)
                if event.event in TERMINAL and event.data["job_id"] == b_job["id"]:
                    return

        await asyncio.wait_for(until_b_finishes(), 60)
    # A's job did publish on A's stream while B listened, before B's job started.
    a_events = await get_redis().xrange(org_stream(tenant.org_id))
    assert {"queued", "started", "succeeded"} <= {f["type"] for _, f in a_events if f["job_id"] == a_job["id"]}
    assert {e.data["job_id"] for e in seen} == {b_job["id"]}
    assert {e.data["org_id"] for e in seen} == {str(other_tenant.org_id)}
    assert {"queued", "started", "succeeded"} <= {e.event for e in seen}


@pytest.fixture(scope="module")
async def member_of_a_only(stack, org_a) -> dict[str, str]:
    """Headers of A's member, signed in through the real sign-in route."""
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        response = await client.post("/api/v1/auth/login", json={"username": org_a.member.username,
                                                                 "password": org_a.member.password})
    assert response.status_code == 200, response.text
    assert response.json()["organization_id"] == str(org_a.tenant.org_id)
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
async def org_b(services) -> Tenant:
    return await make_tenant("iso-b")


GUARDED = [pytest.param(e, id=e.id) for e in endpoints() if not e.public]


@pytest.mark.parametrize("endpoint", GUARDED)
async def test_member_of_one_org_naming_another_in_x_organization_id_gets_404(endpoint, member_of_a_only, org_b,
                                                                            stack, db):
    headers = member_of_a_only | {"X-Organization-Id": str(org_b.org_id)}
    before = await state_of(db, org_b.org_id)
    if endpoint.method == WEBSOCKET:
        reply = await socket_exchange(socket_url(stack.api_url), headers, {"action": "ping"},
                                      until=lambda f: f["type"] == "pong")
        assert [f["code"] for f in reply.frames] == ["not_found"] and reply.close_code == 4404, reply
    else:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
            reply = await call(client, endpoint, fresh_ids(org_id=org_b.org_id), headers=headers)
        assert reply.status == 404 and reply.code == "not_found", reply.text
        assert str(org_b.org_id) in reply.text
    assert await state_of(db, org_b.org_id) == before


async def test_an_api_key_naming_another_org_in_x_organization_id_gets_404(stack, org_a, org_b):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=org_b.headers()) as client:
        response = await client.get("/api/v1/memories", headers={"X-Organization-Id": str(org_a.tenant.org_id)})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert org_a.marker not in response.text
