"""Integration fixtures: one real stack per test session, a fresh scope per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from core.db import dispose_engine, session_scope, set_database_url
from core.migrate import upgrade_database
from core.redis import close_redis, set_redis_url
from core.settings import get_settings
from schemas.permissions import Role
from tests.support.clients import api_client
from tests.support.stack import Stack, start_services, tail
from tests.support.tenants import Tenant, make_tenant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def services():
    svc = start_services()
    set_database_url(svc.database_url)
    set_redis_url(svc.redis_url)
    upgrade_database()
    yield svc
    svc.stop()
    shutil.rmtree(svc.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(services):
    log_dir = Path(tempfile.mkdtemp(prefix="agentmem-test-logs-", dir="/tmp"))
    st = Stack(services, log_dir)
    try:
        st.start(workers=2)
    except Exception:
        print(st.logs())
        st.stop()
        raise
    # This process calls the model server too (the LLM client's tests): the same exception as the stack's.
    settings = get_settings()
    allowed, settings.outbound_allow = settings.outbound_allow, st.env["AGENTMEM_OUTBOUND_ALLOW"]
    defaults, settings.schedule_defaults = settings.schedule_defaults, False  # as the stack's (TEST_SETTINGS)
    yield st
    settings.outbound_allow = allowed
    settings.schedule_defaults = defaults
    st.stop()
    print(f"\nintegration logs kept in {log_dir}")


@pytest.fixture(scope="session", autouse=True)
async def _close_clients():
    yield
    await dispose_engine()
    await close_redis()


@pytest.fixture(scope="session")
async def main_tenant(services) -> Tenant:
    """The organization most tests act for, through its owner key."""
    return await make_tenant("main")


@pytest.fixture
async def tenant(services) -> Tenant:
    """A fresh organization of the test's own, with a key per role."""
    return await make_tenant()


@pytest.fixture
async def other_tenant(services) -> Tenant:
    """Another fresh organization: what it sees of `tenant`'s data must be nothing."""
    return await make_tenant("other")


@pytest.fixture
async def client(stack, main_tenant):
    """An HTTP client acting as the main organization's owner."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=httpx.Timeout(30, read=120),
                                 headers=main_tenant.headers()) as c:
        yield c


@pytest.fixture
async def llm_tenant(tenant, stack):
    """`tenant` with the tests' model server as its default LLM provider."""
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.ADMIN), timeout=30) as admin:
        response = await admin.post("/api/v1/llm/configs", json={
            "name": "test server", "provider": "openai_compatible", "model": "test-chat",
            "base_url": stack.model_url + "/v1", "api_key": "test-key", "is_default": True})
    assert response.status_code == 201, response.text
    return tenant


@pytest.fixture
def address() -> str | None:
    """The address test clients call from (None: 127.0.0.1); a module may override it."""
    return None


@pytest.fixture
async def as_role(stack, tenant, address):
    """`as_role(role, of=tenant, headers=None)`: a client acting with that role's key of an organization."""
    clients = []

    def make(role: Role = Role.OWNER, of: Tenant = tenant, headers: dict[str, str] | None = None):
        clients.append(api_client(stack.api_url, address=address,
                                  headers=of.headers(role) if headers is None else headers))
        return clients[-1]

    yield make
    for c in clients:
        await c.aclose()


@pytest.fixture
def owner(as_role):
    """A client acting as the test's fresh organization's owner."""
    return as_role(Role.OWNER)


@pytest.fixture
async def anonymous(stack):
    """An HTTP client with no credentials."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=httpx.Timeout(30, read=120)) as c:
        yield c


@pytest.fixture
def scope() -> str:
    """A user_id unique to the test: its memories are its namespace."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db():
    """Run one SQL statement against the test database and return all rows."""

    async def query(sql: str, **params):
        async with session_scope() as session:
            result = await session.execute(text(sql), params)
            rows = result.all() if result.returns_rows else []
            await session.commit()
            return rows

    return query


@pytest.fixture(autouse=True)
def _servers_alive(services):
    """An embedded server that died between tests fails the first test after it, with its log, and is
    started again: one failure that names the cause, not every later test failing for no visible reason."""
    for server, log in services.servers():
        if not server.alive():
            ended = server.ended()
            server.start()
            pytest.fail(f"the embedded {server.name} had died ({ended}) before this test; it was started again. "
                        f"The end of its log:\n{tail(log, 40)}")


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request, stack):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(stack.logs())
