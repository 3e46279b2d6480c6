"""AgentMem as an MCP client, against the real stack and real MCP servers built with the SDK
(tests/support/mcp_servers.py): a stdio server the workers run in the sandbox, and a streamable-HTTP
server this module starts on the port the stack's outbound policy allows.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from pipelines.tools.sandbox import processes_of
from schemas.permissions import Role
from tests.support.sse import finish, follow
from tests.support.stack import ROOT
from workers import scheduler

SCRIPT = str(ROOT / "tests" / "support" / "mcp_servers.py")
TOOLS = {"echo", "add", "fail", "hang", "die", "whoami", "slow"}


@pytest.fixture(scope="module")
def mcp_http(stack):
    """The tests' streamable-HTTP MCP server, on the port the stack allows; its endpoint URL."""
    proc = subprocess.Popen([sys.executable, SCRIPT, "http", "--port", str(stack.mcp_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", stack.mcp_port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the test MCP server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{stack.mcp_port}/mcp"
    proc.terminate()
    proc.wait(timeout=10)


def name() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def stdio_body(**fields) -> dict:
    return {"name": name(), "transport": "stdio", "command": sys.executable, "args": [SCRIPT, "stdio"]} | fields


def http_body(url: str, **fields) -> dict:
    return {"name": name(), "transport": "streamable_http", "url": url} | fields


async def create(client, body: dict) -> dict:
    response = await client.post("/api/v1/mcp/servers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def made_and_tested(client, body: dict) -> tuple[dict, dict]:
    """Create a server and run its test job; (server, finished job)."""
    server = await create(client, body)
    response = await client.post(f"/api/v1/mcp/servers/{server['id']}/test")
    assert response.status_code == 202, response.text
    return server, await finish(client, response.json()["id"])


async def call(client, server_id: str, tool: str, arguments: dict | None = None) -> dict:
    response = await client.post(f"/api/v1/mcp/servers/{server_id}/tools/{tool}/call",
                                 json={"arguments": arguments or {}})
    assert response.status_code == 202, response.text
    return response.json()


async def called(client, server_id: str, tool: str, arguments: dict | None = None) -> dict:
    return await finish(client, (await call(client, server_id, tool, arguments))["id"])


# --- configurations ---------------------------------------------------------------------------------------


async def test_crud_never_returns_secrets_and_stores_them_encrypted(owner, db, mcp_http):
    secret, token = f"env-secret-{uuid.uuid4().hex}", f"Bearer hdr-{uuid.uuid4().hex}"
    server = await create(owner, stdio_body(env={"MCP_TEST_SECRET": secret, "OTHER": "x"}, description="demo"))
    assert server["env_keys"] == ["MCP_TEST_SECRET", "OTHER"] and server["network"] is False
    assert server["version"] == 1 and server["tools_count"] is None and server["server_info"] is None
    remote = await create(owner, http_body(mcp_http, headers={"Authorization": token}))
    assert remote["header_names"] == ["Authorization"]
    for response in (await owner.get(f"/api/v1/mcp/servers/{server['id']}"), await owner.get("/api/v1/mcp/servers"),
                     await owner.get(f"/api/v1/mcp/servers/{remote['id']}")):
        assert response.status_code == 200 and secret not in response.text and token not in response.text
    listed = (await owner.get("/api/v1/mcp/servers")).json()
    assert {server["id"], remote["id"]} <= {s["id"] for s in listed}
    [(env_column, header_column)] = await db(
        "SELECT m.env_encrypted, r.headers_encrypted FROM mcp_servers m, mcp_servers r WHERE m.id = :a AND r.id = :b",
        a=server["id"], b=remote["id"])
    assert env_column and secret not in env_column and "MCP_TEST_SECRET" not in env_column
    assert header_column and token not in header_column
    changed = await owner.patch(f"/api/v1/mcp/servers/{server['id']}", json={"description": "changed"})
    assert changed.status_code == 200 and changed.json()["version"] == 2
    assert changed.json()["env_keys"] == ["MCP_TEST_SECRET", "OTHER"]  # untouched by a patch that omits env
    taken = await owner.post("/api/v1/mcp/servers", json=stdio_body(name=server["name"].upper()))
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "mcp_server_name_taken"
    wrong = await owner.patch(f"/api/v1/mcp/servers/{remote['id']}", json={"command": "ls"})
    assert wrong.status_code == 422
    assert (await owner.delete(f"/api/v1/mcp/servers/{server['id']}")).status_code == 204
    gone = await owner.get(f"/api/v1/mcp/servers/{server['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "mcp_server_not_found"


async def test_viewers_and_members_cannot_configure_and_viewers_cannot_call(as_role, owner, mcp_http):
    server = await create(owner, http_body(mcp_http))
    for role in (Role.VIEWER, Role.MEMBER):  # a stdio command runs on the workers: admins and owners only
        refused = await as_role(role).post("/api/v1/mcp/servers", json=stdio_body())
        assert refused.status_code == 403, (role, refused.text)
        patch = await as_role(role).patch(f"/api/v1/mcp/servers/{server['id']}", json={"description": "x"})
        assert patch.status_code == 403
    viewer = as_role(Role.VIEWER)
    assert (await viewer.get(f"/api/v1/mcp/servers/{server['id']}")).status_code == 200
    assert (await viewer.post(f"/api/v1/mcp/servers/{server['id']}/test")).status_code == 403
    assert (await viewer.post(f"/api/v1/mcp/servers/{server['id']}/tools/echo/call",
                              json={"arguments": {}})).status_code == 403
    assert (await viewer.delete(f"/api/v1/mcp/servers/{server['id']}")).status_code == 403
    assert (await as_role(Role.ADMIN).post("/api/v1/mcp/servers", json=stdio_body())).status_code == 201


async def test_another_organizations_server_is_not_found(owner, as_role, other_tenant, mcp_http):
    server = await create(owner, http_body(mcp_http))
    other = as_role(Role.OWNER, of=other_tenant)
    base = f"/api/v1/mcp/servers/{server['id']}"
    for method, path, body in (("GET", base, None), ("PATCH", base, {"description": "x"}), ("DELETE", base, None),
                               ("POST", f"{base}/test", None), ("GET", f"{base}/tools", None),
                               ("POST", f"{base}/tools/echo/call", {"arguments": {"text": "x"}})):
        response = await other.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert server["id"] not in {s["id"] for s in (await other.get("/api/v1/mcp/servers")).json()}
    agent = await other.post("/api/v1/agents", json={"name": "thief", "mcp_server_ids": [server["id"]]})
    assert agent.status_code == 404 and agent.json()["error"]["code"] == "mcp_server_not_found"


@pytest.mark.parametrize("url", ["http://169.254.169.254/mcp", "http://127.0.0.1:1/mcp", "http://10.0.0.7/mcp",
                                 "http://[::1]:8080/mcp", "file:///etc/passwd"])
async def test_a_url_to_a_disallowed_address_is_refused_and_nothing_stored(owner, url):
    before = (await owner.get("/api/v1/mcp/servers")).json()
    response = await owner.post("/api/v1/mcp/servers", json=http_body(url))
    assert response.status_code == 422, response.text
    if url.startswith("http"):
        assert response.json()["error"]["code"] == "url_not_allowed"
    assert (await owner.get("/api/v1/mcp/servers")).json() == before


# --- test jobs and cached tools ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_the_test_job_reports_name_version_and_tools_and_caches_them(owner, mcp_http, transport):
    body = stdio_body() if transport == "stdio" else http_body(mcp_http)
    server, job = await made_and_tested(owner, body)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["name"] == "agentmem-test-server" and result["version"] == "1.2.3"
    assert set(result["tools"]) == TOOLS and result["tools_count"] == len(TOOLS)
    if transport == "stdio":
        assert result["isolation"]["network"] in ("namespace", "none") and result["isolation"]["rlimits"] is True
    tools = (await owner.get(f"/api/v1/mcp/servers/{server['id']}/tools")).json()
    assert tools["refreshed_at"] is not None and {t["name"] for t in tools["tools"]} == TOOLS
    add = next(t for t in tools["tools"] if t["name"] == "add")
    assert add["input_schema"]["required"] == ["a", "b"]
    echo = next(t for t in tools["tools"] if t["name"] == "echo")
    assert echo["annotations"]["readOnlyHint"] is True
    got = (await owner.get(f"/api/v1/mcp/servers/{server['id']}")).json()
    assert got["tools_count"] == len(TOOLS) and got["server_info"]["name"] == "agentmem-test-server"


async def test_before_a_test_the_tool_list_is_empty_and_says_so(owner, mcp_http):
    server = await create(owner, http_body(mcp_http))
    tools = (await owner.get(f"/api/v1/mcp/servers/{server['id']}/tools")).json()
    assert tools == {"server_id": server["id"], "refreshed_at": None, "tools": []}


async def test_a_server_that_cannot_start_fails_its_test_clearly(owner):
    _, job = await made_and_tested(owner, stdio_body(command="no-such-mcp-server-binary"))
    assert job["status"] == "failed" and job["error"]["code"] == "mcp_command_not_found", job
    _, job = await made_and_tested(owner, stdio_body(args=[SCRIPT, "--nonsense"]))
    assert job["status"] == "failed" and job["error"]["code"] == "mcp_connect_failed", job


# --- calls ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_calling_tools_returns_text_and_structured_output(owner, mcp_http, transport):
    body = stdio_body() if transport == "stdio" else http_body(mcp_http)
    server, _ = await made_and_tested(owner, body)
    echo = await called(owner, server["id"], "echo", {"text": "hello"})
    prefix = "stdio" if transport == "stdio" else "http"
    assert echo["status"] == "succeeded", echo
    assert echo["result"]["reason"] == "returned" and echo["result"]["is_error"] is False
    assert echo["result"]["text"] == f"{prefix}: hello" and echo["result"]["duration_ms"] >= 0
    add = await called(owner, server["id"], "add", {"a": 2, "b": 40})
    assert add["result"]["structured"] == {"sum": 42} and add["result"]["tool_name"] == "add"


async def test_a_stdio_server_gets_its_secret_env_runs_sandboxed_and_is_reused(owner):
    secret = f"s-{uuid.uuid4().hex}"
    server, _ = await made_and_tested(owner, stdio_body(env={"MCP_TEST_SECRET": secret}))
    first = await called(owner, server["id"], "whoami")
    assert first["status"] == "succeeded", first
    seen = first["result"]["structured"]
    assert seen["secret"] == secret and seen["cwd"].startswith("/tmp/agentmem-mcp-")
    isolation = first["result"]["isolation"]
    if os.geteuid() == 0:
        assert seen["uid"] == isolation["uid"] and seen["uid"] >= 1_900_000_000
    # Reused: every call a worker process serves finds the same server (the same working directory), whichever
    # worker takes it and however many workers run (earlier tests restart some).
    calls = [first] + [await called(owner, server["id"], "whoami") for _ in range(4)]
    served: dict[str, list[str]] = {}
    for job in calls:
        served.setdefault(job["worker"], []).append(job["result"]["structured"]["cwd"])
    assert any(len(cwds) >= 2 for cwds in served.values()), f"no worker served two calls: {served}"
    assert all(len(set(cwds)) == 1 for cwds in served.values()), f"a worker started its server again: {served}"


async def test_a_tool_error_is_a_clear_result(owner, mcp_http):
    for body in (stdio_body(), http_body(mcp_http)):
        server, _ = await made_and_tested(owner, body)
        job = await called(owner, server["id"], "fail", {"reason": "on purpose"})
        assert job["status"] == "succeeded", job
        assert job["result"]["reason"] == "tool_error" and job["result"]["is_error"] is True
        assert "on purpose" in job["result"]["text"]


async def test_arguments_are_checked_against_the_cached_schema(owner, db, mcp_http):
    server, _ = await made_and_tested(owner, http_body(mcp_http))
    [(jobs_before,)] = await db("SELECT count(*) FROM jobs WHERE payload->>'server_id' = :s", s=server["id"])
    bad = await owner.post(f"/api/v1/mcp/servers/{server['id']}/tools/add/call", json={"arguments": {"a": "two"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "arguments_invalid", bad.text
    unknown = await owner.post(f"/api/v1/mcp/servers/{server['id']}/tools/nope/call", json={"arguments": {}})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "mcp_tool_not_found"
    [(jobs_after,)] = await db("SELECT count(*) FROM jobs WHERE payload->>'server_id' = :s", s=server["id"])
    assert jobs_after == jobs_before


@pytest.mark.parametrize("transport", ["stdio", "streamable_http"])
async def test_a_hanging_tool_fails_the_job_with_mcp_timeout(owner, mcp_http, transport):
    body = stdio_body(timeout_seconds=2) if transport == "stdio" else http_body(mcp_http, timeout_seconds=2)
    server, _ = await made_and_tested(owner, body)
    started = time.monotonic()
    job = await called(owner, server["id"], "hang")
    assert job["status"] == "failed" and job["error"]["code"] == "mcp_timeout", job
    assert time.monotonic() - started < 60
    after = await called(owner, server["id"], "echo", {"text": "still there"})
    assert after["status"] == "succeeded" and after["result"]["text"].endswith("still there"), after


async def test_a_server_dying_mid_call_fails_clearly_and_the_next_call_restarts_it(owner):
    server, _ = await made_and_tested(owner, stdio_body())
    before = await called(owner, server["id"], "whoami")
    job = await called(owner, server["id"], "die")
    assert job["status"] == "failed" and job["error"]["code"] == "mcp_server_died", job
    assert job["attempts"] == 1, "a tool not marked idempotent is not called again"
    if os.geteuid() == 0 and before["result"]["isolation"]["uid"] is not None:
        deadline = time.monotonic() + 30
        while processes_of(before["result"]["isolation"]["uid"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    for _ in range(3):  # whichever worker takes it, the next calls are served
        after = await called(owner, server["id"], "add", {"a": 1, "b": 1})
        assert after["status"] == "succeeded" and after["result"]["structured"] == {"sum": 2}, after


async def test_progress_is_streamed_and_a_call_can_be_cancelled(owner, mcp_http):
    server, _ = await made_and_tested(owner, http_body(mcp_http, timeout_seconds=120))
    job = await call(owner, server["id"], "slow")
    events = await follow(owner, job["id"], last_event_id="0-0")
    progress = [e.data["data"] for e in events if e.event == "progress" and e.data["data"].get("output")]
    assert [p["message"] for p in progress] == ["step 1", "step 2", "step 3"], progress
    hanging = await call(owner, server["id"], "hang")
    await follow(owner, hanging["id"], last_event_id="0-0", stop_after=lambda e: e.event == "started")
    assert (await owner.post(f"/api/v1/jobs/{hanging['id']}/cancel")).status_code in (200, 202)
    done = await finish(owner, hanging["id"], timeout=60)
    assert done["status"] == "cancelled", done


async def test_a_deleted_server_fails_queued_calls_and_changes_restart_stdio(owner):
    server, _ = await made_and_tested(owner, stdio_body(env={"MCP_TEST_SECRET": "one"}))
    assert (await called(owner, server["id"], "whoami"))["result"]["structured"]["secret"] == "one"
    changed = await owner.patch(f"/api/v1/mcp/servers/{server['id']}", json={"env": {"MCP_TEST_SECRET": "two"}})
    assert changed.status_code == 200 and changed.json()["version"] == 2
    assert (await called(owner, server["id"], "whoami"))["result"]["structured"]["secret"] == "two"


# --- agents -----------------------------------------------------------------------------------------------


async def test_an_agent_turn_calls_an_mcp_tool(stack, llm_tenant, mcp_http):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as chat:
        server, _ = await made_and_tested(chat, stdio_body())
        agent = (await chat.post("/api/v1/agents", json={"name": name(), "mcp_server_ids": [server["id"]]})).json()
        assert agent["mcp_server_ids"] == [server["id"]], agent
        conversation = (await chat.post(f"/api/v1/agents/{agent['id']}/conversations", json={})).json()
        mark = f"zq{uuid.uuid4().hex[:10]}"
        function = f"mcp__{server['name']}__add"
        async with httpx.AsyncClient() as http:
            scripted = await http.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": [
                {"tool_calls": [{"name": function, "arguments": {"a": 19, "b": 23}}]}, {"content": "It is 42."}]})
            scripted.raise_for_status()
        posted = await chat.post(f"/api/v1/conversations/{conversation['id']}/messages",
                                 json={"content": f"{mark} what is 19 + 23?"})
        assert posted.status_code == 202, posted.text
        events = await follow(chat, posted.json()["job"]["id"], last_event_id="0-0")
        job = (await chat.get(f"/api/v1/jobs/{posted.json()['job']['id']}")).json()
        assert job["status"] == "succeeded", job
        [result] = [e.data["data"] for e in events if e.event == "tool_result"]
        assert result["name"] == function and result["ok"] is True and '"sum": 42' in result["content"], result
        async with httpx.AsyncClient() as http:
            requests = (await http.get(f"{stack.model_url}/chat/requests", params={"contains": mark})).json()
        offered = {t["function"]["name"] for t in requests[0]["tools"]}
        assert {f"mcp__{server['name']}__{tool}" for tool in TOOLS} <= offered


async def test_the_scheduler_refreshes_a_stale_tool_list_once(owner, db, mcp_http):
    server, _ = await made_and_tested(owner, http_body(mcp_http))
    await db("UPDATE mcp_servers SET tools_refreshed_at = now() - interval '1 day' WHERE id = :id", id=server["id"])
    first, second = await scheduler.maintain_once(), await scheduler.maintain_once()
    assert first["mcp_refreshes"] >= 1 and second["mcp_refreshes"] == 0  # the job is pending: not queued again
    jobs = await db("SELECT id, actor FROM jobs WHERE kind = 'mcp_test' AND payload->>'server_id' = :id "
                    "AND actor = 'scheduler'", id=server["id"])
    assert len(jobs) == 1
    job = await finish(owner, str(jobs[0][0]))
    assert job["status"] == "succeeded" and set(job["result"]["tools"]) == TOOLS, job
    fresh = await db("SELECT tools_refreshed_at > now() - interval '1 minute' AS fresh FROM mcp_servers "
                     "WHERE id = :id", id=server["id"])
    assert fresh[0][0] is True
    await scheduler.maintain_once()
    assert len(await db("SELECT id FROM jobs WHERE kind = 'mcp_test' AND payload->>'server_id' = :id "
                        "AND actor = 'scheduler'", id=server["id"])) == 1
