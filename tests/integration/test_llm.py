"""The LLM layer against the tests' OpenAI-compatible server, through the real `openai` client; the
provider-configuration API; token usage recorded on jobs.

Each test scripts the server's answers under a marker of its own (see tests/support/openai_server.py)
and reads back, from the server, how many chat requests carried it.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from core.db import session_scope
from core.errors import LLMNotConfigured, LLMOutputInvalid, LLMRejected, LLMUnavailable, TransientJobError
from core.llm import LLMClient, ProviderSettings
from core.settings import get_settings
from pipelines.jobs import rows as jobs
from pipelines.jobs.runner import JobContext, RetryLater, run_job
from pipelines.llm import configs as llm_configs
from schemas.enums import JobKind
from schemas.permissions import Role
from tests.support.stack import TEST_JWT_SECRET


class Fact(BaseModel):
    subject: str
    facts: list[str]


@pytest.fixture
def marker() -> str:
    return f"MARK-{uuid.uuid4().hex}"


@pytest.fixture
async def server(stack):
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as http:
        yield http


@pytest.fixture
def provider(stack, marker):
    """Settings for the test server; a name of the test's own, so no other test shares its semaphore."""

    def make(**overrides) -> ProviderSettings:
        return ProviderSettings(**{"kind": "openai_compatible", "model": "test-chat", "api_key": "test-key",
                                   "base_url": stack.model_url + "/v1", "max_retries": 3, "timeout_seconds": 20,
                                   "name": f"test-{marker}"} | overrides)

    return make


async def script(server: httpx.AsyncClient, marker: str, *responses: dict) -> None:
    reply = await server.post("/scripts", json={"marker": marker, "responses": list(responses)})
    assert reply.status_code == 200 and reply.json()["queued"] == len(responses), reply.text


async def chat_requests(server: httpx.AsyncClient, marker: str) -> int:
    return (await server.get("/stats", params={"contains": marker})).json()["chat_requests"]


def ask(marker: str, text: str = "hello") -> list[dict]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"{text} {marker}"}]


# --- the client ----------------------------------------------------------------------------------

async def test_chat_gets_the_default_echo_and_a_scripted_answer_with_usage(server, provider, marker):
    llm = LLMClient(provider())
    default = await llm.chat(ask(marker, "what is up"))
    assert default.content == f"echo: what is up {marker}" and default.finish_reason == "stop"
    # Usage as the server documents it: words of all messages, words of the answer.
    assert (default.usage.prompt_tokens, default.usage.completion_tokens) == (7, 5)
    await script(server, marker, {"content": "scripted answer"})
    assert (await llm.chat(ask(marker))).content == "scripted answer"
    assert (await llm.chat(ask(marker), json_mode=True)).content == "{}"
    assert llm.usage.calls == 3 and await chat_requests(server, marker) == 3


async def test_the_servers_scripts_queue_per_marker_first_scripted_first(server, provider, marker):
    longer = f"{marker}-longer"  # a request carrying `longer` carries `marker` too
    await script(server, marker, {"content": "one"}, {"content": "two"})
    await script(server, longer, {"content": "for longer"})
    llm = LLMClient(provider())
    assert (await llm.chat(ask(longer))).content == "one"
    assert (await server.get(f"/scripts/{marker}")).json() == {"marker": marker, "remaining": 1}
    assert (await server.delete(f"/scripts/{marker}")).json()["dropped"] == 1
    assert (await llm.chat(ask(longer))).content == "for longer"
    assert (await llm.chat(ask(marker, "and now"))).content == f"echo: and now {marker}"
    assert (await server.get("/stats", params={"contains": longer})).json()["chat_requests"] == 2


async def test_stream_assembles_tool_calls_split_across_chunks(server, provider, marker):
    arguments = {"subject": "user", "facts": ["drinks green tea every morning", "lives in Lisbon"]}
    await script(server, marker, {"content": "Noted, saving two facts now.",
                                  "tool_calls": [{"name": "save_facts", "arguments": arguments},
                                                 {"name": "forget", "arguments": {"memory_id": "m-42"}}]})
    llm = LLMClient(provider())
    events = [e async for e in llm.stream(ask(marker), tools=[{"type": "function", "function": {
        "name": "save_facts", "parameters": {"type": "object"}}}])]
    texts = [e.text for e in events if e.type == "text"]
    calls = [e.tool_call for e in events if e.type == "tool_call"]
    assert len(texts) > 1 and "".join(texts) == "Noted, saving two facts now."
    assert [c.name for c in calls] == ["save_facts", "forget"]
    assert calls[0].parsed() == arguments and calls[1].parsed() == {"memory_id": "m-42"}
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id
    done = events[-1]
    assert done.type == "done" and done.finish_reason == "tool_calls"
    assert done.usage.prompt_tokens == 5 and done.usage.completion_tokens > 5 and llm.usage == done.usage
    [body] = (await server.get("/chat/requests", params={"contains": marker})).json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_chat_json_repairs_once_then_succeeds(server, provider, marker):
    await script(server, marker, {"content": "Sure! The user likes tea."},
                 {"content": '{"subject": "user", "facts": ["likes tea"]}'})
    result = await LLMClient(provider()).chat_json(ask(marker, "extract"), Fact)
    assert result == Fact(subject="user", facts=["likes tea"])
    first, repair = (await server.get("/chat/requests", params={"contains": marker})).json()
    assert first["response_format"] == {"type": "json_object"} and '"facts"' in first["messages"][0]["content"]
    assert repair["messages"][-2] == {"role": "assistant", "content": "Sure! The user likes tea."}
    assert "Invalid JSON" in repair["messages"][-1]["content"]


async def test_chat_json_malformed_twice_is_invalid_output(server, provider, marker):
    await script(server, marker, {"content": '{"subject": "user"'}, {"content": '{"subject": "user", "facts": 3}'})
    with pytest.raises(LLMOutputInvalid) as caught:
        await LLMClient(provider()).chat_json(ask(marker, "extract"), Fact)
    assert caught.value.code == "llm_output_invalid" and await chat_requests(server, marker) == 2


async def test_429_waits_at_least_retry_after_then_succeeds(server, provider, marker):
    await script(server, marker, {"status": 429, "retry_after": 1}, {"content": "after the wait"})
    started = time.monotonic()
    result = await LLMClient(provider()).chat(ask(marker))
    assert time.monotonic() - started >= 1.0
    assert result.content == "after the wait" and await chat_requests(server, marker) == 2


async def test_500_then_success(server, provider, marker):
    await script(server, marker, {"status": 500}, {"status": 503}, {"content": "recovered"})
    llm = LLMClient(provider())
    assert (await llm.chat(ask(marker))).content == "recovered"
    assert await chat_requests(server, marker) == 3 and llm.usage.calls == 1


async def test_500_every_time_is_unavailable_after_the_retries(server, provider, marker):
    await script(server, marker, *[{"status": 500}] * 3)
    with pytest.raises(LLMUnavailable) as caught:
        await LLMClient(provider(max_retries=2)).chat(ask(marker))
    assert isinstance(caught.value, TransientJobError) and await chat_requests(server, marker) == 3


async def test_401_is_rejected_without_retrying(server, provider, marker):
    await script(server, marker, {"status": 401}, {"content": "never reached"})
    with pytest.raises(LLMRejected) as caught:
        await LLMClient(provider()).chat(ask(marker))
    assert caught.value.details["status"] == 401 and await chat_requests(server, marker) == 1


async def test_a_slow_provider_times_out_as_unavailable(server, provider, marker):
    await script(server, marker, {"delay": 5, "content": "late"}, {"delay": 5, "content": "late again"})
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match=r"could not be reached or gave no usable answer \(timeout 0.5 s\)"):
        await LLMClient(provider(timeout_seconds=0.5, max_retries=1)).chat(ask(marker))
    assert time.monotonic() - started < 5 and await chat_requests(server, marker) == 2


async def test_calls_in_flight_stay_within_max_concurrency(server, provider, marker):
    await script(server, marker, *[{"delay": 0.3, "content": f"answer {i}"} for i in range(8)])
    llm = LLMClient(provider(max_concurrency=2))
    answers = await asyncio.gather(*(llm.chat(ask(marker, f"question {i}")) for i in range(8)))
    assert sorted(a.content for a in answers) == sorted(f"answer {i}" for i in range(8))
    stats = (await server.get("/stats", params={"contains": marker})).json()
    assert stats["chat_requests"] == 8
    # At most the limit at once, and the limit was used (the calls did run side by side).
    assert stats["chat_max_in_flight"] == 2


# --- usage on jobs -------------------------------------------------------------------------------

async def test_a_jobs_llm_usage_adds_up_over_attempts_and_shows_on_the_job(stack, tenant, server, provider, marker,
                                                                          db):
    async with session_scope() as session:
        job, _ = await jobs.submit(session, org_id=tenant.org_id, kind=JobKind.EXTRACT_FACTS, payload={},
                                   total=1, idempotency_key=None, request_id=None, max_attempts=3)
        await session.commit()
    await script(server, marker, {"content": "first attempt"}, {"content": "second attempt"})

    async def flaky(ctx: JobContext) -> dict:
        llm = LLMClient(provider(), on_usage=ctx.record_usage)
        answer = await llm.chat(ask(marker))
        if ctx.job.attempts == 1:
            raise LLMUnavailable("the provider went away after answering")
        return {"answer": answer.content}

    with pytest.raises(RetryLater):
        await run_job(job.id, flaky)
    [[first]] = await db("SELECT usage FROM jobs WHERE id = :j", j=job.id)
    assert first == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "calls": 1}
    await run_job(job.id, flaky)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.VIEWER)) as api:
        shown = (await api.get(f"/api/v1/jobs/{job.id}")).json()
    assert shown["status"] == "succeeded" and shown["result"] == {"answer": "second attempt"}
    assert shown["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "calls": 2,
                              "cost_usd": None}  # the provider has no prices


# --- provider configurations -----------------------------------------------------------------------

PROVIDER_KEY = "sk-test-" + "Zq9xW8vU7" * 4


@pytest.fixture
async def admin_api(stack, tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.ADMIN), timeout=30) as api:
        yield api


def config_body(stack, **fields) -> dict:
    return {"name": "main", "model": "test-chat", "base_url": stack.model_url + "/v1", "api_key": PROVIDER_KEY} | fields


async def test_configs_crud_without_ever_returning_the_key(stack, admin_api, tenant, db):
    created = await admin_api.post("/api/v1/llm/configs", json=config_body(stack, max_concurrency=3))
    assert created.status_code == 201, created.text
    config = created.json()
    assert config["api_key_set"] is True and config["api_key_hint"] == "…8vU7"
    assert config["model"] == "test-chat" and config["max_concurrency"] == 3 and config["is_default"] is False
    url = f"/api/v1/llm/configs/{config['id']}"
    replies = [created, await admin_api.get(url), await admin_api.get("/api/v1/llm/configs"),
               await admin_api.patch(url, json={"name": "Renamed", "model": "bigger-model"})]
    assert all(r.status_code == 200 for r in replies[1:]), [r.text for r in replies]
    assert all(PROVIDER_KEY not in r.text and PROVIDER_KEY[:-4] not in r.text for r in replies)
    assert [c["id"] for c in replies[2].json()] == [config["id"]]
    assert replies[3].json()["name"] == "Renamed" and replies[3].json()["model"] == "bigger-model"
    assert replies[3].json()["api_key_set"] is True  # untouched by a PATCH that doesn't mention it

    removed = await admin_api.patch(url, json={"api_key": None})
    assert removed.json()["api_key_set"] is False and removed.json()["api_key_hint"] is None
    assert await db("SELECT api_key_encrypted FROM llm_configs WHERE id = :i", i=config["id"]) == [(None,)]

    assert (await admin_api.delete(url)).status_code == 204
    gone = await admin_api.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert (await admin_api.get("/api/v1/llm/configs")).json() == []
    [[deleted_at]] = await db("SELECT deleted_at FROM llm_configs WHERE id = :i", i=config["id"])
    assert deleted_at is not None  # soft: the row stays
    # Its name is free again.
    assert (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="renamed"))).status_code == 201


async def test_the_key_is_encrypted_at_rest_and_decrypts_for_jobs(stack, admin_api, tenant, db, override_jwt,
                                                                 server, marker):
    config = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, is_default=True))).json()
    [[row]] = await db("SELECT to_jsonb(c)::text FROM llm_configs c WHERE id = :i", i=config["id"])
    assert PROVIDER_KEY not in row and PROVIDER_KEY[-12:] not in row
    [[encrypted]] = await db("SELECT api_key_encrypted FROM llm_configs WHERE id = :i", i=config["id"])
    assert encrypted and encrypted.startswith("gAAAAA")  # a Fernet token
    async with session_scope() as session:
        chosen = await llm_configs.require_provider(session, tenant.org_id)
        named = await llm_configs.provider_for(session, tenant.org_id, uuid.UUID(config["id"]))
    assert chosen == named and chosen.api_key == PROVIDER_KEY and chosen.model == "test-chat"
    # The decrypted configuration is one the client can use.
    assert (await LLMClient(chosen).chat(ask(marker, "through the stored config"))).content.startswith("echo:")


async def test_without_a_configuration_there_is_no_provider(tenant, admin_api, stack, override_jwt):
    async with session_scope() as session:
        assert await llm_configs.provider_for(session, tenant.org_id) is None
        with pytest.raises(LLMNotConfigured, match="POST /api/v1/llm/configs") as caught:
            await llm_configs.require_provider(session, tenant.org_id)
        assert caught.value.status_code == 422
    # A configuration that isn't the default is not picked on its own.
    config = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack))).json()
    async with session_scope() as session:
        assert await llm_configs.provider_for(session, tenant.org_id) is None
        assert (await llm_configs.provider_for(session, tenant.org_id, uuid.UUID(config["id"]))).name.startswith("main")
        with pytest.raises(LLMNotConfigured):
            await llm_configs.provider_for(session, tenant.org_id, uuid.uuid4())


async def test_one_default_per_organization(stack, admin_api, tenant, db):
    first = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="a", is_default=True))).json()
    second = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="b", is_default=True))).json()
    defaults = "SELECT name FROM llm_configs WHERE org_id = :o AND is_default AND deleted_at IS NULL"
    assert await db(defaults, o=tenant.org_id) == [("b",)]
    listed = (await admin_api.get("/api/v1/llm/configs")).json()
    assert [(c["name"], c["is_default"]) for c in listed] == [("b", True), ("a", False)]
    assert (await admin_api.patch(f"/api/v1/llm/configs/{first['id']}", json={"is_default": True})).status_code == 200
    assert await db(defaults, o=tenant.org_id) == [("a",)]
    assert (await admin_api.get(f"/api/v1/llm/configs/{second['id']}")).json()["is_default"] is False


async def test_the_default_is_read_and_moved_through_its_own_endpoints(stack, admin_api, tenant, other_tenant, db):
    default = "/api/v1/llm/configs/default"
    missing = await admin_api.get(default)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "no_default_llm_config"
    # The stack has no service-wide provider either, and the answer says so.
    assert missing.json()["error"]["details"] == {"fallback": "none"}
    assert "llm_not_configured" in missing.json()["error"]["message"]
    first = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="a", is_default=True))).json()
    second = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="b"))).json()
    assert (await admin_api.get(default)).json() == first

    moved = await admin_api.put(default, json={"config_id": second["id"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["id"] == second["id"] and moved.json()["is_default"] is True
    defaults = "SELECT name FROM llm_configs WHERE org_id = :o AND is_default AND deleted_at IS NULL"
    assert await db(defaults, o=tenant.org_id) == [("b",)]
    assert (await admin_api.get(f"/api/v1/llm/configs/{first['id']}")).json()["is_default"] is False
    assert (await admin_api.get(default)).json()["id"] == second["id"]
    again = await admin_api.put(default, json={"config_id": second["id"]})
    assert again.status_code == 200 and again.json() == (await admin_api.get(default)).json()

    # Not one of this organization's live configurations: 404, and the default stays where it was.
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers()) as other:
        foreign = (await other.post("/api/v1/llm/configs", json=config_body(stack))).json()
        assert (await other.put(default, json={"config_id": second["id"]})).status_code == 404
    assert (await admin_api.delete(f"/api/v1/llm/configs/{first['id']}")).status_code == 204
    for config_id in (foreign["id"], first["id"], str(uuid.uuid4())):
        refused = await admin_api.put(default, json={"config_id": config_id})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found", refused.text
    assert await db(defaults, o=tenant.org_id) == [("b",)]
    rows = await db("SELECT target_id, result FROM audit_logs WHERE org_id = :o AND action = 'set_default_llm_config' "
                    "ORDER BY created_at", o=tenant.org_id)
    assert [r[1] for r in rows] == ["success", "success", "failure", "failure", "failure"]
    assert rows[0][0] == second["id"] and rows[-1][0] != second["id"]


async def test_concurrent_moves_of_the_default_leave_exactly_one(stack, admin_api, tenant, db):
    configs = [(await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name=f"c{i}"))).json()
               for i in range(4)]
    replies = await asyncio.gather(*(admin_api.put("/api/v1/llm/configs/default", json={"config_id": c["id"]})
                                     for c in configs * 2))
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies]
    [[count]] = await db("SELECT count(*) FROM llm_configs WHERE org_id = :o AND is_default", o=tenant.org_id)
    assert count == 1


async def test_limits_and_prices_are_stored_shown_and_removed_with_null(stack, admin_api, tenant, override_jwt):
    limits = {"requests_per_minute": 60, "tokens_per_minute": 90_000, "context_window": 128_000,
              "prompt_price_per_million": 0.15, "completion_price_per_million": 0.6}
    created = await admin_api.post("/api/v1/llm/configs", json=config_body(stack, is_default=True, **limits))
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in limits} == limits
    async with session_scope() as session:
        provider = await llm_configs.require_provider(session, tenant.org_id)
    assert {k: getattr(provider, k) for k in limits} == limits
    url = f"/api/v1/llm/configs/{created.json()['id']}"
    changed = await admin_api.patch(url, json={"requests_per_minute": None, "prompt_price_per_million": 0})
    assert changed.status_code == 200, changed.text
    assert changed.json()["requests_per_minute"] is None and changed.json()["prompt_price_per_million"] == 0
    assert changed.json()["tokens_per_minute"] == 90_000  # not mentioned: unchanged
    for bad in ({"requests_per_minute": 0}, {"completion_price_per_million": -1}, {"context_window": 10}):
        refused = await admin_api.patch(url, json=bad)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_input", refused.text


@pytest.mark.parametrize("body, code", [
    ({"base_url": "ftp://models.example/v1"}, "invalid_input"),
    ({"provider": "azure", "base_url": "https://res.openai.azure.com"}, "invalid_input"),
    ({"provider": "openai_compatible", "base_url": None}, "invalid_input"),
    ({"max_retries": 99}, "invalid_input"),
])
async def test_invalid_configurations_are_422(stack, admin_api, body, code):
    reply = await admin_api.post("/api/v1/llm/configs", json=config_body(stack) | body)
    assert reply.status_code == 422 and reply.json()["error"]["code"] == code, reply.text
    assert PROVIDER_KEY not in reply.text


@pytest.mark.parametrize("look_alike, status, code", [
    ("ＣＡＰＥ", 409, "llm_config_name_taken"), ("Сape", 422, "invalid_input"), ("Саре", 409, "llm_config_name_taken"),
    ("Ca\u200bpe", 422, "invalid_input"), ("Cape\u202e", 422, "invalid_input"),
], ids=["fullwidth", "mixed script", "cyrillic", "zero-width", "rtl override"])
async def test_a_config_name_that_looks_like_a_taken_one_is_refused(stack, admin_api, look_alike, status, code):
    assert (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="Cape"))).status_code == 201
    reply = await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name=look_alike))
    assert reply.status_code == status and reply.json()["error"]["code"] == code, reply.text
    names = [c["name"] for c in (await admin_api.get("/api/v1/llm/configs")).json()]
    assert names == ["Cape"]


async def test_names_are_unique_per_organization_case_insensitively(stack, admin_api, other_tenant):
    assert (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="Main"))).status_code == 201
    again = await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="main"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "llm_config_name_taken"
    other = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, name="other"))).json()
    renamed = await admin_api.patch(f"/api/v1/llm/configs/{other['id']}", json={"name": "MAIN"})
    assert renamed.status_code == 409 and renamed.json()["error"]["code"] == "llm_config_name_taken"
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers()) as api:
        assert (await api.post("/api/v1/llm/configs", json=config_body(stack, name="main"))).status_code == 201


async def test_patch_keeps_a_configuration_complete(stack, admin_api):
    config = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack))).json()
    reply = await admin_api.patch(f"/api/v1/llm/configs/{config['id']}", json={"provider": "azure"})
    assert reply.status_code == 422 and "api_version" in reply.json()["error"]["message"]
    reply = await admin_api.patch(f"/api/v1/llm/configs/{config['id']}",
                                  json={"provider": "azure", "api_version": "2024-10-21"})
    assert reply.status_code == 200 and reply.json()["provider"] == "azure"


async def test_another_organization_gets_404(stack, admin_api, other_tenant, db):
    config = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack, is_default=True))).json()
    url = f"/api/v1/llm/configs/{config['id']}"
    before = await db("SELECT to_jsonb(c)::text FROM llm_configs c WHERE id = :i", i=config["id"])
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers()) as other:
        replies = [await other.get(url), await other.patch(url, json={"name": "taken over", "api_key": "sk-evil"}),
                   await other.delete(url)]
        assert (await other.get("/api/v1/llm/configs")).json() == []
    assert all(r.status_code == 404 and r.json()["error"]["code"] == "not_found" for r in replies)
    assert await db("SELECT to_jsonb(c)::text FROM llm_configs c WHERE id = :i", i=config["id"]) == before


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER], ids=lambda r: r.value)
async def test_members_and_viewers_may_not_manage_configurations(stack, tenant, admin_api, role):
    config = (await admin_api.post("/api/v1/llm/configs", json=config_body(stack))).json()
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(role)) as api:
        replies = [await api.get("/api/v1/llm/configs"), await api.get(f"/api/v1/llm/configs/{config['id']}"),
                   await api.post("/api/v1/llm/configs", json=config_body(stack, name="mine")),
                   await api.delete(f"/api/v1/llm/configs/{config['id']}")]
    assert all(r.status_code == 403 and r.json()["error"]["code"] == "permission_denied" for r in replies)
    assert all("llm:manage" in r.text for r in replies)


@pytest.fixture
def override_jwt(monkeypatch):
    """This process decrypts what the API encrypted: give it the stack's secret (the key derives from it)."""
    settings = get_settings()
    monkeypatch.setattr(settings, "jwt_secret", SecretStr(TEST_JWT_SECRET))
    monkeypatch.setattr(settings, "encryption_key", None)
    for name in ("llm_model", "llm_base_url", "llm_api_key", "llm_provider"):
        monkeypatch.setattr(settings, name, None)
    return settings
