"""The API process's cache of API keys on the real stack: keys it has seen are served without a lookup, and
every change written by another process (here: SQL from the tests' process, as the CLI or maintenance
would) reaches it through PostgreSQL NOTIFY, long before an entry's 60 s age runs out.

Each test polls for a few seconds at most: a notification takes milliseconds; without it the stale
entry would be served for a minute.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from schemas.permissions import Role
from tests.support.metrics import scrape

DEADLINE_SECONDS = 5.0


async def figures(stack) -> dict[tuple[str, tuple], float]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as anonymous:
        return await scrape(anonymous)


async def listening(stack) -> bool:
    return (await figures(stack)).get(("agentmem_api_key_cache_listening", ())) == 1.0


async def served_from_cache(stack) -> float:
    return (await figures(stack)).get(("agentmem_api_key_lookups_total", (("source", "cache"),)), 0.0)


async def wait_until(check, what: str) -> float:
    """Seconds until `check()` (a coroutine function) is true; fails after DEADLINE_SECONDS."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < DEADLINE_SECONDS, f"still not {what} after {DEADLINE_SECONDS} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
async def member(stack, tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.MEMBER), timeout=30) as c:
        yield c


async def cached(stack, client: httpx.AsyncClient) -> None:
    """Make sure the API serves `client`'s key from its cache."""
    await wait_until(lambda: listening(stack), "listening")
    assert (await client.get("/api/v1/memories", params={"limit": 1})).status_code == 200
    before = await served_from_cache(stack)
    assert (await client.get("/api/v1/memories", params={"limit": 1})).status_code == 200
    assert await served_from_cache(stack) > before


async def refused(client: httpx.AsyncClient, code: str) -> bool:
    reply = await client.get("/api/v1/memories", params={"limit": 1})
    if reply.status_code == 200:
        return False
    assert reply.status_code == 401 and reply.json()["error"]["code"] == code, reply.text
    return True


async def test_a_key_revoked_by_another_process_is_refused_within_moments(stack, tenant, member, db):
    await cached(stack, member)
    await db("UPDATE api_keys SET revoked_at = now() WHERE id = :k", k=tenant.key_ids[Role.MEMBER])
    await wait_until(lambda: refused(member, "api_key_revoked"), "refused")


async def test_a_key_expired_by_another_process_is_refused_within_moments(stack, tenant, member, db):
    await cached(stack, member)
    await db("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :k",
             k=tenant.key_ids[Role.MEMBER])
    await wait_until(lambda: refused(member, "api_key_expired"), "refused")


async def test_an_organization_deleted_by_another_process_refuses_its_keys_within_moments(stack, tenant, member, db):
    await cached(stack, member)
    await db("UPDATE organizations SET deleted_at = now() WHERE id = :o", o=tenant.org_id)
    await wait_until(lambda: refused(member, "api_key_revoked"), "refused")


async def test_a_rate_limit_set_by_another_process_applies_to_a_cached_key_within_moments(stack, tenant, member, db):
    await cached(stack, member)
    await db("UPDATE organizations SET limits = limits || '{\"rate_limit_per_minute\": 7777}' WHERE id = :o",
             o=tenant.org_id)

    async def limited() -> bool:
        reply = await member.get("/api/v1/memories", params={"limit": 1})
        assert reply.status_code == 200, reply.text
        return reply.headers["X-RateLimit-Limit"] == "7777"

    await wait_until(limited, "limited")


async def test_a_lost_listen_connection_stops_caching_until_it_is_back_and_misses_no_revocation(stack, tenant,
                                                                                                 member, db):
    await cached(stack, member)
    # Cut the API's LISTEN connection, then revoke at once: the notification is lost with it, so the
    # cache must have been dropped for the key to be refused.
    await db("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agentmem-listen'")
    await db("UPDATE api_keys SET revoked_at = now() WHERE id = :k", k=tenant.key_ids[Role.MEMBER])
    await wait_until(lambda: refused(member, "api_key_revoked"), "refused")
    # It listens again and caches again.
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.VIEWER), timeout=30) as viewer:
        await cached(stack, viewer)


async def test_revoking_through_the_api_refuses_the_key_on_the_next_request(stack, tenant, member, as_role):
    await cached(stack, member)
    reply = await as_role(Role.OWNER).delete(f"/api/v1/api-keys/{tenant.key_ids[Role.MEMBER]}")
    assert reply.status_code == 200, reply.text
    assert await refused(member, "api_key_revoked")  # the very next request, no wait
