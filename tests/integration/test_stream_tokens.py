"""Stream tokens: short-lived `?token=` credentials for EventSource and WebSocket clients.

A token follows the one job it names (or, without a job, its organization's stream), nothing else,
and only while the key or account behind it is still good. It never lands in a log.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from schemas.permissions import Role
from tests.support.accounts import access_headers, sign_token
from tests.support.routes import socket_exchange, socket_url
from tests.support.sse import TERMINAL, finish, sse_stream
from tests.support.tenants import make_user


async def finished_job(client: httpx.AsyncClient, content: str = "a memory to follow") -> str:
    response = await client.post("/api/v1/memories", json={"items": [{"content": content}],
                                                           "user_id": f"tokens-{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 202, response.text
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job["id"]


async def stream_token(client: httpx.AsyncClient, job_id: str | None = None) -> str:
    response = await client.post("/api/v1/stream-tokens", json={"job_id": job_id} if job_id else {})
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture
async def owner(stack, tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as client:
        yield client


@pytest.fixture
async def jobs(owner) -> tuple[str, str]:
    """Two finished jobs of the tenant: X and Y."""
    return await finished_job(owner, "job X"), await finished_job(owner, "job Y")


async def status_of(client: httpx.AsyncClient, path: str, **kwargs) -> tuple[int, str | None]:
    """Status and error code of a GET that may answer with an endless event stream (closed unread)."""
    async with client.stream("GET", path, **kwargs) as response:
        if response.status_code == 200:
            return 200, None
        await response.aread()
        return response.status_code, response.json()["error"]["code"]


async def test_a_job_token_follows_that_job_without_headers(anonymous, owner, jobs):
    job_x, _ = jobs
    token = await stream_token(owner, job_x)
    events = []

    async def collect() -> None:
        async for event in sse_stream(anonymous, f"/api/v1/jobs/{job_x}/events?token={token}"):
            events.append(event)
            if event.event in TERMINAL:
                return

    await asyncio.wait_for(collect(), 30)
    assert [e.event for e in events] == ["snapshot", "succeeded"]
    assert {e.data["job_id"] for e in events} == {job_x}


async def test_a_job_token_is_404_on_another_job_of_the_same_org_and_on_the_org_stream(anonymous, owner, jobs):
    job_x, job_y = jobs
    token = await stream_token(owner, job_x)
    assert await status_of(anonymous, f"/api/v1/jobs/{job_y}/events?token={token}") == (404, "not_found")
    assert await status_of(anonymous, f"/api/v1/events?token={token}") == (404, "not_found")
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={token}") == (200, None)


async def test_an_org_token_is_404_on_another_orgs_job(anonymous, owner, jobs, stack, other_tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as other:
        their_job = await finished_job(other)
    token = await stream_token(owner)  # no job: follows the organization's stream and any job of it
    assert await status_of(anonymous, f"/api/v1/jobs/{jobs[0]}/events?token={token}") == (200, None)
    assert await status_of(anonymous, f"/api/v1/jobs/{their_job}/events?token={token}") == (404, "not_found")


async def test_an_expired_token_is_401_token_expired(anonymous, tenant, jobs):
    job_x, _ = jobs
    subject, claims = f"api_key:{tenant.key_ids[Role.OWNER]}", {"org": str(tenant.org_id), "job": job_x}
    fresh = sign_token("stream", subject, lifetime=300, **claims)
    # Issued ten minutes ago for five: expired well beyond the allowed clock skew.
    expired = sign_token("stream", subject, lifetime=300, issued_at=int(time.time()) - 600, **claims)
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={fresh}") == (200, None)
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={expired}") == (401, "token_expired")


@pytest.mark.parametrize("path", ["/api/v1/jobs/{job}/events", "/api/v1/events"])
async def test_an_api_key_in_the_query_is_401_key_in_query(path, anonymous, tenant, jobs):
    url = path.format(job=jobs[0]) + f"?token={tenant.keys[Role.VIEWER]}"
    assert await status_of(anonymous, url) == (401, "key_in_query")


async def test_an_api_key_in_the_websocket_query_is_refused_with_key_in_query(stack, tenant):
    reply = await socket_exchange(socket_url(stack.api_url, query=f"token={tenant.keys[Role.VIEWER]}"), None,
                                  {"action": "ping"}, until=lambda f: f["type"] == "pong")
    assert [f.get("code") for f in reply.frames] == ["key_in_query"] and reply.close_code == 4401


async def test_a_stream_token_is_not_an_access_token(stack, owner, jobs):
    job_x, _ = jobs
    token = await stream_token(owner, job_x)
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}) as bearer:
        for path in (f"/api/v1/jobs/{job_x}", f"/api/v1/jobs/{job_x}/events", "/api/v1/memories"):
            assert await status_of(bearer, path) == (401, "token_wrong_type"), path


async def test_revoking_the_key_that_minted_a_token_stops_the_token(stack, anonymous, owner, jobs):
    job_x, _ = jobs
    created = (await owner.post("/api/v1/api-keys", json={"name": "dashboard", "role": "viewer"})).json()
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {created['key']}"}) as key:
        job_token, org_token = await stream_token(key, job_x), await stream_token(key)
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={job_token}") == (200, None)
    assert (await owner.delete(f"/api/v1/api-keys/{created['id']}")).status_code == 200
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={job_token}") == (401, "api_key_revoked")
    assert await status_of(anonymous, f"/api/v1/events?token={org_token}") == (401, "api_key_revoked")


async def test_a_token_stops_when_the_key_behind_it_expires(anonymous, owner, jobs, db):
    job_x, _ = jobs
    created = (await owner.post("/api/v1/api-keys", json={"name": "short-lived", "role": "viewer"})).json()
    async with httpx.AsyncClient(base_url=str(owner.base_url),
                                 headers={"Authorization": f"Bearer {created['key']}"}) as key:
        token = await stream_token(key, job_x)
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={token}") == (200, None)
    await db("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :k", k=created["id"])
    assert await status_of(anonymous, f"/api/v1/jobs/{job_x}/events?token={token}") == (401, "api_key_expired")


async def test_a_removed_members_token_stops_following_the_org(anonymous, owner, tenant, jobs):
    member = await make_user("streamer", org_id=tenant.org_id, role=Role.MEMBER)
    async with httpx.AsyncClient(base_url=str(owner.base_url),
                                 headers=access_headers(member.id, tenant.org_id)) as signed_in:
        token = await stream_token(signed_in)
    assert await status_of(anonymous, f"/api/v1/events?token={token}") == (200, None)
    removed = await owner.delete(f"/api/v1/organizations/{tenant.org_id}/members/{member.id}")
    assert removed.status_code == 204, removed.text
    assert await status_of(anonymous, f"/api/v1/events?token={token}") == (404, "not_found")
    assert await status_of(anonymous, f"/api/v1/jobs/{jobs[0]}/events?token={token}") == (404, "not_found")


async def test_a_websocket_with_a_job_token_follows_that_job_only(stack, owner, jobs):
    job_x, job_y = jobs
    token = await stream_token(owner, job_x)
    url = socket_url(stack.api_url, query=f"token={token}")
    reply = await socket_exchange(url, None, {"action": "subscribe", "job_id": job_x},
                                  until=lambda f: f["type"] == "event" and f["event"]["type"] in TERMINAL)
    events = [f["event"] for f in reply.frames if f["type"] == "event"]
    assert [e["type"] for e in events] == ["snapshot", "succeeded"] and {e["job_id"] for e in events} == {job_x}
    other = await socket_exchange(url, None, {"action": "subscribe", "job_id": job_y},
                                  until=lambda f: f["type"] == "error")
    assert [(f["type"], f.get("code")) for f in other.frames] == [("error", "not_found")]


async def test_a_websocket_without_credentials_gets_not_authenticated_and_4401(stack):
    reply = await socket_exchange(socket_url(stack.api_url), None, {"action": "ping"},
                                  until=lambda f: f["type"] == "pong")
    assert [(f["type"], f["code"]) for f in reply.frames] == [("error", "not_authenticated")]
    assert reply.close_code == 4401


async def test_tokens_never_reach_the_api_log(stack, anonymous, owner, jobs):
    job_x, job_y = jobs
    token = await stream_token(owner, job_x)
    # Refused uses are logged too.
    assert await status_of(anonymous, f"/api/v1/jobs/{job_y}/events?token={token}") == (404, "not_found")
    await socket_exchange(socket_url(stack.api_url, query=f"token={token}"), None,
                          {"action": "subscribe", "job_id": job_x},
                          until=lambda f: f["type"] == "event" and f["event"]["type"] in TERMINAL)
    async with anonymous.stream("GET", f"/api/v1/jobs/{job_x}/events?token={token}") as response:
        assert response.status_code == 200
        await response.aread()  # a finished job's stream ends after its terminal event
    log = stack.log_dir / "api.log"
    deadline = time.monotonic() + 15
    # The access line of a stream is written once it has ended: wait for ours.
    while f"/api/v1/jobs/{job_x}/events?token=[redacted]" not in log.read_text():
        assert time.monotonic() < deadline, "the stream's access log line never appeared"
        await asyncio.sleep(0.05)
    text = log.read_text()
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature alone


async def test_an_org_token_resumes_the_org_stream_with_last_event_id_in_the_query(anonymous, owner, jobs):
    # A browser reconnecting with a fresh token has a new URL, so EventSource sends no Last-Event-ID header:
    # the web console passes the last id it saw as `?last_event_id=`.
    job_x, job_y = jobs

    async def org_events(query: str, until: str) -> list:
        events = []

        async def collect() -> None:
            async for event in sse_stream(anonymous, f"/api/v1/events?token={await stream_token(owner)}&{query}"):
                events.append(event)
                if event.event == "succeeded" and event.data["job_id"] == until:
                    return

        await asyncio.wait_for(collect(), 30)
        return events

    everything = await org_events("last_event_id=0-0", until=job_y)
    x_done = next(e for e in everything if e.event == "succeeded" and e.data["job_id"] == job_x)
    assert everything.index(x_done) < len(everything) - 1
    resumed = await org_events(f"last_event_id={x_done.id}", until=job_y)
    assert [e.id for e in resumed] == [e.id for e in everything[everything.index(x_done) + 1:]]
    assert {e.data["job_id"] for e in resumed} == {job_y}
