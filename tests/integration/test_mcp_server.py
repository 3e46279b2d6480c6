"""AgentMem as an MCP server, driven by the official SDK's own client over both transports: Streamable HTTP
at the stack's `/mcp`, and stdio through `agentmem mcp` started as a process against the stack's API.
Every call is a REST request underneath: the same roles, tenancy and error codes."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from schemas.permissions import Role

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"add_memories", "search_memories", "get_memory", "list_memories", "delete_memory", "get_job",
         "list_blocks", "update_block", "send_message"}


@asynccontextmanager
async def over_http(stack, key: str, mode: str = "auto"):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=120))
    async with http, Client(streamable_http_client(stack.api_url + "/mcp", http_client=http), mode=mode) as client:
        yield client


def stdio_params(stack, key: str | None) -> StdioServerParameters:
    env = {"AGENTMEM_API_URL": stack.api_url, "PYTHONPATH": str(ROOT), "AGENTMEM_LOG_LEVEL": "WARNING"}
    if key is not None:
        env["AGENTMEM_API_KEY"] = key
    return StdioServerParameters(command=sys.executable, args=["-m", "cli.main", "mcp"], env=env, cwd=str(ROOT))


@asynccontextmanager
async def over_stdio(stack, key: str):
    async with Client(stdio_params(stack, key)) as client:
        yield client


@pytest.fixture(params=["http", "stdio"])
def connect(request, stack, tenant):
    """`connect(role=Role.OWNER, of=tenant)`: an MCP client session acting with that key, over this transport."""

    def make(role: Role = Role.OWNER, of=tenant):
        key = of.keys[role]
        return over_http(stack, key) if request.param == "http" else over_stdio(stack, key)

    return make


async def call(client: Client, tool: str, **arguments) -> dict:
    """A tool's structured answer; fails the test on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) is not None
    return result.structured_content


async def refused(client: Client, tool: str, **arguments) -> dict:
    """A tool error's payload: `{"error": {"code", "message", …}, "status": …}`."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    payload = json.loads(result.content[0].text)
    assert payload == result.structured_content
    return payload


async def test_tools_and_the_prompt_template_are_listed_with_what_models_read(connect):
    async with connect() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        templates = (await client.list_resource_templates()).resource_templates
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 40 and "\n        " not in tool.description, tool.name
        assert tool.input_schema["type"] == "object"
    assert tools["add_memories"].input_schema["required"] == ["items"]
    assert tools["get_memory"].input_schema["properties"]["memory_id"]["format"] == "uuid"
    assert tools["search_memories"].annotations.read_only_hint is True
    assert tools["delete_memory"].annotations.destructive_hint is True
    assert [t.uri_template for t in templates] == ["agentmem://agents/{agent_id}/prompt"]


async def test_added_memories_are_found_by_meaning_read_listed_and_deleted(connect, owner, scope):
    facts = ["The user's dog is a golden retriever called Biscuit.", "The user works as a dentist in Lisbon."]
    async with connect() as client:
        job = await call(client, "add_memories", items=[{"content": f} for f in facts], user_id=scope,
                         wait_seconds=60)
        assert job["status"] == "succeeded", job
        assert job["result"]["inserted"] == 2
        assert (await call(client, "get_job", job_id=job["id"]))["status"] == "succeeded"

        found = await call(client, "search_memories", query="what kind of pet do they have?", user_id=scope,
                           mode="vector")
        assert found["hits"][0]["memory"]["content"] == facts[0]

        listed = await call(client, "list_memories", user_id=scope)
        assert {m["content"] for m in listed["items"]} == set(facts)
        dog = next(m for m in listed["items"] if "dog" in m["content"])
        assert (await call(client, "get_memory", memory_id=dog["id"]))["content"] == facts[0]

        assert await call(client, "delete_memory", memory_id=dog["id"]) == {"deleted": True, "memory_id": dog["id"]}
        gone = await refused(client, "get_memory", memory_id=dog["id"])
        assert (gone["status"], gone["error"]["code"]) == (404, "not_found")
    response = await owner.get("/api/v1/memories", params={"user_id": scope})
    assert [m["content"] for m in response.json()["items"]] == [facts[1]]


async def test_add_memories_without_waiting_answers_the_queued_job(connect, owner, scope):
    async with connect() as client:
        job = await call(client, "add_memories", items=[{"content": "Queued, not awaited."}], user_id=scope,
                         idempotency_key=f"mcp-{scope}")
        again = await call(client, "add_memories", items=[{"content": "Queued, not awaited."}], user_id=scope,
                           idempotency_key=f"mcp-{scope}")
        assert again["id"] == job["id"]  # REST's Idempotency-Key, through the tool
        finished = await call(client, "get_job", job_id=job["id"], wait_seconds=60)
    assert job["kind"] == "ingest_memories"
    assert finished["status"] == "succeeded"


async def test_blocks_are_listed_and_updated_and_the_prompt_resource_compiles_them(connect, owner):
    block = (await owner.post("/api/v1/blocks", json={"label": "human", "value": "Name: Ada."})).json()
    agent = await owner.post("/api/v1/agents", json={"name": f"mcp-{uuid.uuid4().hex[:8]}", "system": "Be brief.",
                                                     "block_ids": [block["id"]]})
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    async with connect() as client:
        listed = await call(client, "list_blocks", agent_id=agent_id)
        assert [(b["id"], b["version"]) for b in listed["items"]] == [(block["id"], 1)]

        updated = await call(client, "update_block", block_id=block["id"], value="Name: Ada. Likes tea.",
                             expected_version=1)
        assert (updated["version"], updated["value"]) == (2, "Name: Ada. Likes tea.")
        stale = await refused(client, "update_block", block_id=block["id"], value="lost", expected_version=1)
        assert (stale["status"], stale["error"]["code"]) == (409, "version_conflict")

        prompt = await client.read_resource(f"agentmem://agents/{agent_id}/prompt")
        assert "Likes tea." in prompt.contents[0].text and "Be brief." in prompt.contents[0].text
        with pytest.raises(MCPError, match="not_found"):
            await client.read_resource(f"agentmem://agents/{uuid.uuid4()}/prompt")
    assert (await owner.get(f"/api/v1/blocks/{block['id']}")).json()["value"] == "Name: Ada. Likes tea."


async def test_send_message_runs_an_agent_turn_and_answers_with_its_reply(connect, llm_tenant, owner):
    agent = (await owner.post("/api/v1/agents", json={"name": f"mcp-{uuid.uuid4().hex[:8]}",
                                                      "system": "You are a test agent."})).json()
    mark = f"zq{uuid.uuid4().hex[:10]}"
    async with connect() as client:
        first = await call(client, "send_message", agent_id=agent["id"], user_id="mcp-user", content=f"hi {mark}",
                           wait_seconds=60)
        assert first["job"]["status"] == "succeeded", first["job"]
        assert mark in first["answer"]
        again = await call(client, "send_message", conversation_id=first["conversation_id"],
                           content=f"again {mark}", wait_seconds=60)
        both = await refused(client, "send_message", content="which?", agent_id=agent["id"],
                             conversation_id=first["conversation_id"])
    assert again["conversation_id"] == first["conversation_id"] and f"again {mark}" in again["answer"]
    assert both["error"]["code"] == "invalid_input"
    history = (await owner.get(f"/api/v1/conversations/{first['conversation_id']}/messages")).json()["items"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]


async def test_a_turn_longer_than_the_wait_answers_its_running_job_and_get_job_waits_for_the_rest(
        connect, llm_tenant, owner, stack):
    agent = (await owner.post("/api/v1/agents", json={"name": f"mcp-{uuid.uuid4().hex[:8]}"})).json()
    mark = f"zq{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient() as http:
        scripted = await http.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": [
            {"delay": 3, "content": f"late answer {mark}"}]})
        scripted.raise_for_status()
    async with connect() as client:
        early = await call(client, "send_message", agent_id=agent["id"], content=f"take your time {mark}",
                           wait_seconds=0.5)
        assert early["job"]["status"] in ("queued", "running") and early["answer"] is None
        finished = await call(client, "get_job", job_id=early["job"]["id"], wait_seconds=60)
    assert finished["status"] == "succeeded"
    assert finished["result"]["content"] == f"late answer {mark}"


async def test_a_viewer_key_reads_but_every_write_is_refused_as_on_rest(connect, as_role, scope):
    owner = as_role(Role.OWNER)
    stored = await owner.post("/api/v1/memories", json={"items": [{"content": "kept"}], "user_id": scope})
    block = (await owner.post("/api/v1/blocks", json={"label": "human", "value": "unchanged"})).json()
    async with connect(Role.VIEWER) as client:
        assert (await call(client, "get_job", job_id=stored.json()["id"]))["id"] == stored.json()["id"]
        writes = [("add_memories", {"items": [{"content": "not stored"}], "user_id": scope}),
                  ("update_block", {"block_id": block["id"], "value": "changed"}),
                  ("delete_memory", {"memory_id": str(uuid.uuid4())})]
        for tool, arguments in writes:
            payload = await refused(client, tool, **arguments)
            assert (payload["status"], payload["error"]["code"]) == (403, "permission_denied"), tool
    viewer_rest = await as_role(Role.VIEWER).post("/api/v1/memories", json={"items": [{"content": "x"}]})
    assert viewer_rest.json()["error"]["code"] == "permission_denied"
    assert (await owner.get(f"/api/v1/blocks/{block['id']}")).json()["version"] == 1
    jobs = (await owner.get("/api/v1/jobs")).json()["items"]
    assert [j["id"] for j in jobs] == [stored.json()["id"]]


async def test_a_tools_write_is_audited_as_its_rest_request_and_the_mcp_traffic_is_not(connect, tenant, owner, scope):
    async with connect(Role.MEMBER) as client:
        await call(client, "list_memories", user_id=scope)
        job = await call(client, "add_memories", items=[{"content": "audited"}], user_id=scope)
    # Requests only: the worker audits the job's end too (`job.succeeded`), whenever it comes.
    entries = [e for e in (await owner.get("/api/v1/audit-logs")).json()["items"] if not e["action"].startswith("job.")]
    assert [(e["action"], e["actor"], e["target_id"]) for e in entries] == [
        ("ingest_memories", f"api_key:{tenant.key_ids[Role.MEMBER]}", job["id"])]


async def test_another_organizations_ids_are_not_found_and_left_alone(connect, owner, other_tenant, scope):
    job = (await owner.post("/api/v1/memories", json={"items": [{"content": "ours alone"}], "user_id": scope})).json()
    block = (await owner.post("/api/v1/blocks", json={"label": "human", "value": "ours"})).json()
    agent = (await owner.post("/api/v1/agents", json={"name": f"mcp-{uuid.uuid4().hex[:8]}"})).json()
    async with connect(Role.OWNER, of=other_tenant) as client:
        finished = await call(client, "list_memories", user_id=scope)
        assert finished["items"] == []
        for tool, arguments in [("get_job", {"job_id": job["id"]}),
                                ("update_block", {"block_id": block["id"], "value": "theirs"}),
                                ("send_message", {"agent_id": agent["id"], "content": "hello?"})]:
            payload = await refused(client, tool, **arguments)
            assert payload["status"] == 404 and payload["error"]["code"].endswith("not_found"), (tool, payload)
        with pytest.raises(MCPError, match="not_found"):
            await client.read_resource(f"agentmem://agents/{agent['id']}/prompt")
    assert (await owner.get(f"/api/v1/blocks/{block['id']}")).json()["value"] == "ours"


async def test_arguments_that_do_not_fit_the_schema_are_a_tool_error_not_a_crash(connect):
    async with connect() as client:
        result = await client.call_tool("get_memory", {"memory_id": "../jobs/x"})
        assert result.is_error
        assert "memory_id" in result.content[0].text
        assert "add_memories" in {t.name for t in (await client.list_tools()).tools}  # the session goes on


async def test_mcp_over_http_needs_credentials_as_rest_does(stack, tenant):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        anonymous = await http.post("/mcp", json=initialize, headers=headers)
        wrong = await http.post("/mcp", json=initialize, headers=headers | {"Authorization": "Bearer amk_nope"})
        signed = await http.post("/mcp", json=initialize, headers=headers | tenant.headers(Role.VIEWER))
        # The README's curl: stateless, so a request needs no handshake before it.
        listed = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                 headers=headers | tenant.headers(Role.VIEWER))
        openapi = (await http.get("/openapi.json")).json()
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "api_key_invalid")
    assert signed.status_code == 200, signed.text
    assert listed.status_code == 200 and listed.text.startswith("event: message")
    assert '"name":"add_memories"' in listed.text
    assert "/mcp" not in openapi["paths"]


async def test_older_clients_get_the_same_tools_through_the_initialize_handshake(stack, tenant, scope):
    async with over_http(stack, tenant.keys[Role.MEMBER], mode="legacy") as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        job = await call(client, "add_memories", items=[{"content": "from an older client"}], user_id=scope,
                         wait_seconds=60)
    assert job["status"] == "succeeded"


def test_agentmem_mcp_without_a_key_says_so_and_exits_nonzero(stack):
    params = stdio_params(stack, None)
    done = subprocess.run([params.command, *params.args], env={"PATH": "/usr/bin:/bin", **params.env},
                          cwd=params.cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "AGENTMEM_API_KEY" in done.stderr
    assert done.stdout == ""
