"""The outbound policy on the real stack: LLM configurations that lead to internal addresses are refused
when stored, redirects are not followed, and a host that resolves elsewhere when called fails its job
without a connection being made.

The stack allows exactly one internal address: its model server (`AGENTMEM_OUTBOUND_ALLOW` in
tests/support/stack.py). A recording listener stands for "some other internal service".
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid

import httpx
import pytest

from core import outbound
from core.db import session_scope
from core.errors import LLMUnavailable
from core.llm import LLMClient, ProviderSettings
from core.settings import get_settings
from pipelines.jobs import rows as jobs
from pipelines.jobs.runner import JobContext, run_job
from pipelines.llm import configs as llm_configs
from schemas.enums import JobKind
from schemas.llm import LlmConfigCreate
from schemas.permissions import Role
from tests.support.stack import free_port


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it gets and closes each at once."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def listener():
    async with Listener() as server:
        yield server


@pytest.fixture
async def admin_api(stack, tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.ADMIN), timeout=30) as api:
        yield api


@pytest.fixture
def marker() -> str:
    return f"MARK-{uuid.uuid4().hex}"


def model_port(stack) -> int:
    return httpx.URL(stack.model_url).port


def config(base_url: str, **fields) -> dict:
    return {"name": "internal", "model": "test-chat", "base_url": base_url, "api_key": "sk-test"} | fields


@pytest.mark.parametrize("base_url, rule", [
    ("http://169.254.169.254/latest/meta-data/", "link_local"),
    ("http://0xa9fea9fe/latest/meta-data/", "link_local"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "link_local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://10.0.0.1/v1", "private"),
    ("http://127.0.0.1:{other}/v1", "loopback"),  # a loopback port the stack does not allow
    ("http://2130706433:{other}/v1", "loopback"),
    ("http://localhost:{model}/v1", "loopback"),  # the allowed port, but by a name that is not allowed
])
async def test_a_configuration_leading_to_an_internal_address_is_refused_and_not_stored(
        stack, admin_api, tenant, db, base_url, rule):
    url = base_url.format(other=free_port(), model=model_port(stack))
    reply = await admin_api.post("/api/v1/llm/configs", json=config(url))
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "url_not_allowed" and error["details"]["rule"] == rule
    assert "AGENTMEM_OUTBOUND_ALLOW" in error["message"]
    assert await db("SELECT count(*) FROM llm_configs WHERE org_id = :o", o=tenant.org_id) == [(0,)]


async def test_moving_a_configuration_to_an_internal_address_is_refused_and_changes_nothing(stack, admin_api, db):
    created = await admin_api.post("/api/v1/llm/configs", json=config(stack.model_url + "/v1"))
    assert created.status_code == 201, created.text
    before = await db("SELECT to_jsonb(c)::text FROM llm_configs c WHERE id = :i", i=created.json()["id"])
    reply = await admin_api.patch(f"/api/v1/llm/configs/{created.json()['id']}",
                                  json={"base_url": "http://10.1.2.3:8000/v1", "name": "moved"})
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "url_not_allowed", reply.text
    assert await db("SELECT to_jsonb(c)::text FROM llm_configs c WHERE id = :i", i=created.json()["id"]) == before


async def test_a_host_name_that_does_not_resolve_is_refused(admin_api):
    reply = await admin_api.post("/api/v1/llm/configs", json=config("https://no-such-host.invalid/v1"))
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "url_unresolvable", reply.text


async def test_a_redirect_from_the_provider_to_another_host_is_not_followed(stack, listener, marker, monkeypatch):
    # Both are allowed here, so only "redirects are not followed" keeps the request from the listener.
    monkeypatch.setattr(get_settings(), "outbound_allow",
                        f"{get_settings().outbound_allow},127.0.0.1:{listener.port}")
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as server:
        await server.post("/scripts", json={"marker": marker, "responses": [
            {"status": 307, "location": f"http://127.0.0.1:{listener.port}/v1/chat/completions"}] * 2})
        llm = LLMClient(ProviderSettings(kind="openai_compatible", model="test-chat", base_url=stack.model_url + "/v1",
                                         max_retries=1, timeout_seconds=10, name=f"redirect-{marker}"))
        with pytest.raises(LLMUnavailable) as caught:
            await llm.chat([{"role": "user", "content": f"hello {marker}"}])
        asked = (await server.get("/stats", params={"contains": marker})).json()["chat_requests"]
    assert listener.connections == 0 and asked == 2
    assert "could not be reached or gave no usable answer" in caught.value.message


async def test_a_host_that_resolves_to_an_internal_address_when_called_fails_its_job_without_connecting(
        tenant, listener, monkeypatch, db):
    host = f"llm-{uuid.uuid4().hex[:8]}.rebind.test"
    answers = [[ipaddress.ip_address("93.184.216.34")], [ipaddress.ip_address("127.0.0.1")]]
    asked: list[str] = []

    async def rebinding(name: str, port: int) -> list:
        asked.append(name)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(outbound, "resolve", rebinding)
    async with session_scope() as session:  # stored while the name still resolves to a public address
        await llm_configs.create_config(session, tenant.org_id, LlmConfigCreate(
            name="rebinding", model="test-chat", base_url=f"http://{host}:{listener.port}/v1", is_default=True))
        job, _ = await jobs.submit(session, org_id=tenant.org_id, kind=JobKind.EXTRACT_FACTS, payload={}, total=1,
                                   idempotency_key=None, request_id=None, max_attempts=3)
        await session.commit()

    async def ask_the_model(ctx: JobContext) -> dict:
        async with session_scope() as session:
            provider = await llm_configs.require_provider(session, tenant.org_id)
        answer = await LLMClient(provider, on_usage=ctx.record_usage).chat([{"role": "user", "content": "hi"}])
        return {"answer": answer.content}

    await run_job(job.id, ask_the_model)  # a permanent failure: recorded, not raised for a retry
    [(status, code, message, attempts)] = await db(
        "SELECT status, error_code, error_message, attempts FROM jobs WHERE id = :j", j=job.id)
    assert (status, code, attempts) == ("failed", "url_not_allowed", 1)
    assert f"{host} resolves to a loopback address" in message and "127.0.0.1" not in message
    assert asked == [host, host] and listener.connections == 0
