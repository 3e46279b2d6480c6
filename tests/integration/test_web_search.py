"""The `web_search` built-in against a local fake SearxNG: results, retries, a timeout, bad answers, agent
turns; and off (not listed, not callable) on the session's stack, which configures no endpoint.

With an endpoint, the tool needs an API and workers started with AGENTMEM_WEB_SEARCH_URL: this module
starts a stack of its own on a Redis database of its own (so no session worker, which has no endpoint,
takes its jobs), with the fake's port the one internal address the outbound policy allows besides the
model server's.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from pipelines.tools.workspace import BUILTINS
from schemas.permissions import Role
from tests.support.searx_server import FakeSearx
from tests.support.sse import finish, follow
from tests.support.stack import Stack

WEB_SEARCH = BUILTINS["web_search"].id


def _own_redis_database(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{(int(parts.path.strip('/') or 0) + 2) % 16}"))


@pytest.fixture(scope="module")
def searx():
    fake = FakeSearx().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def search_stack(services, searx):
    log_dir = Path(tempfile.mkdtemp(prefix="agentmem-test-web-search-", dir="/tmp"))
    st = Stack(dataclasses.replace(services, redis_url=_own_redis_database(services.redis_url)), log_dir)
    try:
        st.start(workers=1, extra_env={"AGENTMEM_WEB_SEARCH_URL": searx.url + "/",
                                       "AGENTMEM_WEB_SEARCH_TIMEOUT_SECONDS": "1",
                                       "AGENTMEM_WEB_SEARCH_ATTEMPTS": "3",
                                       "AGENTMEM_WEB_SEARCH_MAX_RESULTS": "5",
                                       "AGENTMEM_OUTBOUND_ALLOW": f"127.0.0.1:{searx.port}"})
    except Exception:
        print(st.logs())
        st.stop()
        raise
    yield st
    st.stop()
    print(f"\nweb search logs kept in {log_dir}")


@pytest.fixture
async def searcher(search_stack, tenant):
    async with httpx.AsyncClient(base_url=search_stack.api_url, headers=tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as client:
        yield client


async def search(client, arguments: dict) -> dict:
    response = await client.post(f"/api/v1/tools/{WEB_SEARCH}/execute", json={"arguments": arguments})
    assert response.status_code == 202, response.text
    return await finish(client, response.json()["id"])


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def test_it_is_listed_as_a_builtin_when_an_endpoint_is_configured(searcher):
    listed = (await searcher.get("/api/v1/tools")).json()
    [tool] = [t for t in listed if t["name"] == "web_search"]
    assert tool["id"] == str(WEB_SEARCH) and tool["builtin"] is True and tool["tags"] == ["builtin", "web"]
    assert [t["name"] for t in (await searcher.get("/api/v1/tools", params={"tag": "web"})).json()] == ["web_search"]
    assert (await searcher.get(f"/api/v1/tools/{WEB_SEARCH}")).json()["json_schema"]["required"] == ["query"]


async def test_a_search_returns_titles_urls_and_snippets(searcher, searx):
    query = f"lisbon trams {tag()}"
    job = await search(searcher, {"query": query})
    assert job["status"] == "succeeded", job
    output = job["result"]["output"]
    # The fake's result without a URL is left out; the rest keep their order.
    assert output == {"query": query, "results": [
        {"title": f"Result {i} for {query}", "url": f"https://example.org/{i}",
         "snippet": f"Snippet {i} about {query}."} for i in range(3)]}
    assert searx.count(query) == 1


@pytest.mark.parametrize("asked, expected", [(None, 5), (2, 2), (50, 5)])
async def test_the_number_of_results_is_capped_by_the_service(searcher, asked, expected):
    arguments = {"query": f"many @@results:20@@ {tag()}", **({"max_results": asked} if asked else {})}
    job = await search(searcher, arguments)
    assert job["status"] == "succeeded", job
    assert len(job["result"]["output"]["results"]) == expected


async def test_a_500_is_retried_then_the_search_succeeds(searcher, searx):
    mark = tag()
    job = await search(searcher, {"query": f"flaky @@fail500:{mark}:2@@"})
    assert job["status"] == "succeeded", job
    assert len(job["result"]["output"]["results"]) == 3
    assert searx.count(mark) == 3  # two 500s, then the answer


async def test_an_endpoint_failing_every_attempt_fails_the_job_clearly(searcher, searx):
    mark = tag()
    job = await search(searcher, {"query": f"broken @@fail500:{mark}:99@@"})
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "web_search_unavailable" and "500" in job["error"]["message"]
    assert "3 attempts" in job["error"]["message"]
    assert searx.count(mark) == 3


async def test_a_hanging_endpoint_times_out_clearly(searcher, searx):
    mark = tag()
    started = time.monotonic()
    job = await search(searcher, {"query": f"slow @@hang@@ {mark}"})
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "web_search_timeout"
    assert "did not answer within 1 s" in job["error"]["message"]
    assert searx.count(mark) == 3
    assert time.monotonic() - started < 30  # three 1 s timeouts and backoff, not the fake's minute


@pytest.mark.parametrize("marker", ["@@notjson@@", "@@status:400@@"])
async def test_an_answer_that_is_no_search_result_fails_without_retrying(searcher, searx, marker):
    mark = tag()
    job = await search(searcher, {"query": f"{marker} {mark}"})
    assert job["status"] == "failed" and job["error"]["code"] == "web_search_failed", job
    assert searx.count(mark) == 1


async def test_bad_arguments_are_refused_before_a_job(searcher):
    for arguments in ({}, {"query": ""}, {"query": "x", "max_results": 0}, {"query": "x", "extra": 1}):
        response = await searcher.post(f"/api/v1/tools/{WEB_SEARCH}/execute", json={"arguments": arguments})
        assert response.status_code == 422 and response.json()["error"]["code"] == "arguments_invalid", arguments


async def test_an_agent_turn_searches_and_sees_the_results(search_stack, tenant, searcher, searx):
    async with httpx.AsyncClient(base_url=search_stack.api_url, headers=tenant.headers(Role.ADMIN),
                                 timeout=30) as admin:
        config = await admin.post("/api/v1/llm/configs", json={
            "name": "test server", "provider": "openai_compatible", "model": "test-chat",
            "base_url": search_stack.model_url + "/v1", "api_key": "test-key", "is_default": True})
        assert config.status_code == 201, config.text
    mark, query = f"zq{tag()}", f"porto bridges {tag()}"
    async with httpx.AsyncClient() as http:
        scripted = await http.post(f"{search_stack.model_url}/scripts", json={"marker": mark, "responses": [
            {"tool_calls": [{"name": "web_search", "arguments": {"query": query, "max_results": 2}}]},
            {"content": "Found them."}]})
        scripted.raise_for_status()
    agent = await searcher.post("/api/v1/agents", json={"name": f"searcher-{tag()}", "system": "Search."})
    conversation = await searcher.post(f"/api/v1/agents/{agent.json()['id']}/conversations", json={})
    posted = await searcher.post(f"/api/v1/conversations/{conversation.json()['id']}/messages",
                                 json={"content": f"{mark} find bridges"})
    assert posted.status_code == 202, posted.text
    await follow(searcher, posted.json()["job"]["id"], last_event_id="0-0")
    job = (await searcher.get(f"/api/v1/jobs/{posted.json()['job']['id']}")).json()
    assert job["status"] == "succeeded" and job["result"]["content"] == "Found them.", job
    messages = (await searcher.get(f"/api/v1/conversations/{conversation.json()['id']}/messages")).json()["items"]
    [tool_message] = [m for m in messages if m["role"] == "tool"]
    assert json.loads(tool_message["content"])["results"][1]["url"] == "https://example.org/1"
    assert len(json.loads(tool_message["content"])["results"]) == 2
    assert searx.count(query) == 1
    async with httpx.AsyncClient() as http:
        [first, *_] = (await http.get(f"{search_stack.model_url}/chat/requests", params={"contains": mark})).json()
    assert "web_search" in [t["function"]["name"] for t in first["tools"]]


# --- off: the session's stack has no endpoint ------------------------------------------------------------


async def test_without_an_endpoint_it_is_neither_listed_nor_callable(owner, db, tenant):
    names = [t["name"] for t in (await owner.get("/api/v1/tools")).json()]
    assert names == ["file_save", "file_read", "file_search"]
    assert (await owner.get("/api/v1/tools", params={"tag": "web"})).json() == []
    fetched = await owner.get(f"/api/v1/tools/{WEB_SEARCH}")
    assert fetched.status_code == 404, fetched.text
    executed = await owner.post(f"/api/v1/tools/{WEB_SEARCH}/execute", json={"arguments": {"query": "anything"}})
    assert executed.status_code == 422 and executed.json()["error"]["code"] == "web_search_not_configured"
    assert "AGENTMEM_WEB_SEARCH_URL" in executed.json()["error"]["message"]
    assert await db("SELECT count(*) FROM jobs WHERE org_id = :o", o=tenant.org_id) == [(0,)]
    # The name stays the built-in's, so turning the tool on later breaks no organization's tool.
    taken = await owner.post("/api/v1/tools", json={"name": "web_search", "language": "python", "source": "print(1)"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "tool_name_taken"


async def test_without_an_endpoint_an_agent_is_not_offered_it(llm_tenant, as_role, stack):
    chat = as_role(Role.OWNER, of=llm_tenant)
    mark = f"zq{tag()}"
    async with httpx.AsyncClient() as http:
        scripted = await http.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": [
            {"tool_calls": [{"name": "web_search", "arguments": {"query": "anything"}}]}, {"content": "Oh well."}]})
        scripted.raise_for_status()
    agent = await chat.post("/api/v1/agents", json={"name": f"offline-{tag()}", "system": "Search."})
    conversation = await chat.post(f"/api/v1/agents/{agent.json()['id']}/conversations", json={})
    posted = await chat.post(f"/api/v1/conversations/{conversation.json()['id']}/messages",
                             json={"content": f"{mark} search"})
    await follow(chat, posted.json()["job"]["id"], last_event_id="0-0")
    messages = (await chat.get(f"/api/v1/conversations/{conversation.json()['id']}/messages")).json()["items"]
    [tool_message] = [m for m in messages if m["role"] == "tool"]
    assert json.loads(tool_message["content"]) == {"error": "there is no tool called 'web_search'"}
    async with httpx.AsyncClient() as http:
        [first, *_] = (await http.get(f"{stack.model_url}/chat/requests", params={"contains": mark})).json()
    assert "web_search" not in [t["function"]["name"] for t in first["tools"]]
