"""Webhooks end to end: real workers POST signed events to a real receiver in the test, which verifies them with
its own Standard Webhooks implementation; retries, the delivery log, disabling, redelivery, the outbound policy."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from core.events import history, org_stream
from core.settings import get_settings
from pipelines.webhooks.deliver import post_event
from schemas.permissions import Role
from tests.support.metrics import growth, scrape
from tests.support.sse import finish
from tests.support.webhook_receiver import Receiver, verify
from workers import scheduler


@pytest.fixture(scope="module")
def receiver(stack):
    # This process runs the scheduler pass that submits delivery jobs: it takes the stack's webhook settings.
    settings, saved = get_settings(), {}
    for name, value in stack.env.items():
        if name.startswith("AGENTMEM_WEBHOOK_"):
            field = name.removeprefix("AGENTMEM_").lower()
            saved[field] = getattr(settings, field)
            setattr(settings, field, type(saved[field])(value))
    started = Receiver(stack.webhook_port).start()
    yield started
    started.stop()
    for field, value in saved.items():
        setattr(settings, field, value)


async def _webhook(owner, receiver: Receiver, event_types: list[str], statuses: list[int] | None = None):
    path = f"/hook-{uuid.uuid4().hex[:12]}"
    response = await owner.post("/api/v1/webhooks", json={"url": receiver.url(path), "event_types": event_types})
    assert response.status_code == 201, response.text
    hook = response.json()
    receiver.script(path, hook["secret"], statuses)
    return hook, path


async def _remember(owner, scope: str, *contents: str) -> dict:
    response = await owner.post("/api/v1/memories", json={"items": [{"content": c} for c in contents],
                                                          "user_id": scope})
    assert response.status_code == 202, response.text
    job = await finish(owner, response.json()["id"])
    assert job["status"] == "succeeded", job
    await scheduler.maintain_once()  # the pass that turns the outbox into delivery jobs
    return job


async def _arrived(receiver: Receiver, path: str, count: int):
    return await asyncio.to_thread(receiver.wait_for, path, count)


async def _settled(owner) -> list[dict]:
    """Every delivery job of the organization, each once it has finished."""
    listed = (await owner.get("/api/v1/jobs", params={"kind": "webhook_delivery"})).json()["items"]
    return [await finish(owner, job["id"]) for job in listed]


async def _log(owner, hook_id: str) -> list[dict]:
    response = await owner.get(f"/api/v1/webhooks/{hook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_events_arrive_signed_and_the_receiver_verifies_them(owner, receiver, scope):
    hook, path = await _webhook(owner, receiver, ["job.succeeded", "memory.created", "memory.deleted"])
    assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
    shown = (await owner.get(f"/api/v1/webhooks/{hook['id']}")).json()
    assert "secret" not in shown and hook["secret"] not in str((await owner.get("/api/v1/webhooks")).json())

    job = await _remember(owner, scope, "Ada prefers tea", "Ada lives in Lyon")
    deliveries = await _arrived(receiver, path, 2)
    assert all(d.verified for d in deliveries), [d.headers for d in deliveries]
    # The receiver's check is no rubber stamp: a changed body or another secret fails it.
    first = deliveries[0]
    assert not verify(hook["secret"], first.headers, first.body + b" ")
    assert not verify("whsec_" + "A" * 44, first.headers, first.body)
    by_type = {d.event["type"]: d for d in deliveries}
    assert set(by_type) == {"job.succeeded", "memory.created"}
    assert by_type["job.succeeded"].event["data"]["id"] == job["id"]
    assert by_type["job.succeeded"].event["data"]["kind"] == "ingest_memories"
    memories = (await owner.get("/api/v1/memories", params={"user_id": scope})).json()["items"]
    created = by_type["memory.created"].event["data"]
    assert sorted(created["memory_ids"]) == sorted(m["id"] for m in memories) and created["job_id"] == job["id"]
    assert all(d.headers["webhook-id"].startswith("msg_") for d in deliveries)

    assert (await owner.delete(f"/api/v1/memories/{memories[0]['id']}")).status_code in (200, 204)
    await scheduler.maintain_once()
    deleted = (await _arrived(receiver, path, 3))[2]
    assert deleted.verified and deleted.event["type"] == "memory.deleted"
    assert deleted.event["data"]["memory_ids"] == [memories[0]["id"]]

    assert [job["status"] for job in await _settled(owner)] == ["succeeded"] * 3
    log = await _log(owner, hook["id"])
    assert len(log) == 3 and all(e["succeeded"] and e["status_code"] == 200 and e["attempt"] == 1 for e in log)
    assert {e["event_id"] for e in log} == {d.headers["webhook-id"] for d in await _arrived(receiver, path, 3)}


async def test_a_500_is_retried_and_each_attempt_logged(owner, receiver, scope, anonymous):
    before = await scrape(anonymous)
    hook, path = await _webhook(owner, receiver, ["job.succeeded"], statuses=[500, 200])
    await _remember(owner, scope, "retried delivery")
    failed, succeeded = await _arrived(receiver, path, 2)
    assert failed.verified and succeeded.verified
    assert failed.headers["webhook-id"] == succeeded.headers["webhook-id"]  # one event, two attempts
    delivery_job = (await _log(owner, hook["id"]))[-1]["job_id"]
    job = await finish(owner, delivery_job)
    assert job["kind"] == "webhook_delivery" and job["status"] == "succeeded" and job["attempts"] == 2, job
    log = sorted(await _log(owner, hook["id"]), key=lambda e: e["attempt"])
    assert [(e["attempt"], e["status_code"], e["succeeded"], e["error_code"]) for e in log] == [
        (1, 500, False, "http_status"), (2, 200, True, None)]
    assert '"status": 500' in log[0]["response_excerpt"]
    grew = growth(before, await scrape(anonymous))
    assert grew("agentmem_webhook_deliveries_total", (("outcome", "failed_retrying"),)) >= 1
    assert grew("agentmem_webhook_deliveries_total", (("outcome", "delivered"),)) >= 1


async def test_a_run_of_failed_deliveries_disables_the_webhook(owner, receiver, scope, tenant, db, anonymous):
    # Tests allow 3 attempts a delivery and disable after 2 failed deliveries (tests/support/stack.py).
    before = await scrape(anonymous)
    hook, path = await _webhook(owner, receiver, ["job.succeeded"], statuses=[500])
    await _remember(owner, scope, "first failing event")
    await _remember(owner, scope, "second failing event")
    await _arrived(receiver, path, 6)
    for job_id in {e["job_id"] for e in await _log(owner, hook["id"])}:
        job = await finish(owner, job_id)
        assert job["status"] == "failed" and job["error"]["code"] == "http_status", job
    grew = growth(before, await scrape(anonymous))
    assert grew("agentmem_webhook_deliveries_total", (("outcome", "failed"),)) >= 2  # the two deliveries gave up
    assert grew("agentmem_webhook_deliveries_total", (("outcome", "failed_retrying"),)) >= 4
    shown = (await owner.get(f"/api/v1/webhooks/{hook['id']}")).json()
    assert shown["enabled"] is False and shown["consecutive_failures"] == 2
    assert "2 deliveries" in shown["disabled_reason"]
    audit = await db("SELECT actor, details FROM audit_logs WHERE org_id = :o AND action = 'webhook.disabled' "
                     "AND target_id = :h", o=tenant.org_id, h=hook["id"])
    assert len(audit) == 1 and audit[0][0] == "system" and audit[0][1]["consecutive_failures"] == 2
    events = [e for e in await history(org_stream(tenant.org_id), 500) if e.type.value == "webhook.disabled"]
    assert [e.data["webhook_id"] for e in events] == [hook["id"]]

    # Disabled: new events are not sent to it, and redelivery waits until it is enabled again.
    deliveries_before = len((await owner.get("/api/v1/jobs", params={"kind": "webhook_delivery"})).json()["items"])
    await _remember(owner, scope, "while disabled")
    after = len((await owner.get("/api/v1/jobs", params={"kind": "webhook_delivery"})).json()["items"])
    assert after == deliveries_before
    attempt = (await _log(owner, hook["id"]))[0]
    refused = await owner.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{attempt['id']}/redeliver")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "webhook_disabled"

    receiver.script(path, hook["secret"], [200])
    enabled = await owner.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True})
    assert enabled.json()["enabled"] is True and enabled.json()["consecutive_failures"] == 0
    again = await owner.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{attempt['id']}/redeliver")
    assert again.status_code == 202, again.text
    assert (await finish(owner, again.json()["id"]))["status"] == "succeeded"
    redelivered = (await _arrived(receiver, path, 7))[6]
    assert redelivered.verified and redelivered.headers["webhook-id"] == attempt["event_id"]


async def test_private_addresses_are_refused_when_stored_and_when_delivering(owner, receiver, stack, scope, db):
    unlisted = 1 if stack.webhook_port != 1 else 2  # loopback, on a port AGENTMEM_OUTBOUND_ALLOW does not list
    for url in (f"http://127.0.0.1:{unlisted}/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest",
                "http://localhost/hook", "http://[::1]/hook"):
        refused = await owner.post("/api/v1/webhooks", json={"url": url})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "url_not_allowed", (url, refused.text)
    assert (await owner.get("/api/v1/webhooks")).json()["items"] == []

    hook, path = await _webhook(owner, receiver, ["job.succeeded"])
    moved = await owner.patch(f"/api/v1/webhooks/{hook['id']}", json={"url": "http://192.168.1.1/hook"})
    assert moved.status_code == 422 and moved.json()["error"]["code"] == "url_not_allowed"
    # As if its name now resolved inside (DNS rebinding): every attempt checks the address again.
    await db("UPDATE webhooks SET url = :u WHERE id = :h", u=f"http://127.0.0.1:{unlisted}/hook", h=hook["id"])
    await _remember(owner, scope, "an event for a refused address")
    [delivery] = (await owner.get("/api/v1/jobs", params={"kind": "webhook_delivery"})).json()["items"]
    job = await finish(owner, delivery["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "url_not_allowed" and job["attempts"] == 1, job
    [attempt] = await _log(owner, hook["id"])
    assert attempt["error_code"] == "url_not_allowed" and attempt["status_code"] is None
    assert receiver.deliveries.get(path) is None

    # The log keeps attempts for AGENTMEM_WEBHOOK_LOG_RETENTION_DAYS: the scheduler deletes older ones.
    await db("UPDATE webhook_deliveries SET created_at = now() - interval '31 days' WHERE id = :d", d=attempt["id"])
    await scheduler.maintain_once()
    assert await _log(owner, hook["id"]) == []


async def test_bad_input_permissions_and_other_organizations(as_role, other_tenant, receiver):
    owner, member = as_role(Role.OWNER), as_role(Role.MEMBER)
    unknown = await owner.post("/api/v1/webhooks", json={"url": receiver.url("/x"), "event_types": ["job.exploded"]})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_event_type"
    assert "job.failed" in unknown.json()["error"]["details"]["event_types"]
    assert (await owner.get("/api/v1/webhooks")).json()["items"] == []
    assert (await member.get("/api/v1/webhooks")).status_code == 403
    assert (await member.post("/api/v1/webhooks", json={"url": receiver.url("/x")})).status_code == 403

    hook, path = await _webhook(owner, receiver, ["*"])
    rotated = await owner.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200 and rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != hook["secret"]
    # A test event, signed with the new secret (the receiver knows only the old one until told).
    receiver.script(path, rotated.json()["secret"])
    ping = await owner.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert ping.status_code == 202 and (await finish(owner, ping.json()["id"]))["status"] == "succeeded"
    [tested] = await _arrived(receiver, path, 1)
    assert tested.verified and tested.event == {"type": "webhook.test", "timestamp": tested.event["timestamp"],
                                                "data": {"webhook_id": hook["id"]}}
    assert not verify(hook["secret"], tested.headers, tested.body)
    outsider = as_role(Role.OWNER, of=other_tenant)
    for call in (outsider.get(f"/api/v1/webhooks/{hook['id']}"),
                 outsider.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": False}),
                 outsider.get(f"/api/v1/webhooks/{hook['id']}/deliveries"),
                 outsider.delete(f"/api/v1/webhooks/{hook['id']}")):
        answer = await call
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "webhook_not_found"
    assert (await owner.get(f"/api/v1/webhooks/{hook['id']}")).json()["enabled"] is True
    assert (await owner.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 204
    assert (await owner.get(f"/api/v1/webhooks/{hook['id']}")).status_code == 404


async def test_an_attempt_follows_no_redirect_reads_a_capped_answer_and_times_out(receiver, stack, monkeypatch):
    # The delivery's HTTP step, run here against the real receiver (this process allows its port too).
    settings = get_settings()
    redirect = f"/redirect-{uuid.uuid4().hex[:8]}"
    receiver.script(redirect, "", [307], location="http://93.184.216.34:9/elsewhere")
    moved = await post_event(receiver.url(redirect), b"{}", {"content-type": "application/json"})
    assert moved.status_code == 307 and moved.error_code == "redirect_not_followed" and not moved.permanent
    assert len(receiver.deliveries[redirect]) == 1  # and nothing followed it anywhere

    big = f"/big-{uuid.uuid4().hex[:8]}"
    receiver.script(big, "", [200], body=b"\x00" + b"x" * (5 * settings.webhook_response_max_bytes))
    answered = await post_event(receiver.url(big), b"{}", {})
    assert answered.succeeded and len(answered.response_excerpt) == settings.webhook_response_max_bytes
    assert "\x00" not in answered.response_excerpt  # storable as text

    slow = f"/slow-{uuid.uuid4().hex[:8]}"
    receiver.script(slow, "", [200], delay=3)
    monkeypatch.setattr(settings, "webhook_timeout_seconds", 0.5)
    late = await post_event(receiver.url(slow), b"{}", {})
    assert late.error_code == "timeout" and late.status_code is None

    unlisted = 1 if stack.webhook_port != 1 else 2
    refused = await post_event(f"http://127.0.0.1:{unlisted}/x", b"{}", {})
    assert refused.error_code == "url_not_allowed" and refused.permanent


async def test_a_big_write_is_a_few_events_of_at_most_1000_memory_ids(owner, receiver, tenant, db):
    hook, path = await _webhook(owner, receiver, ["memory.created"])
    # 1001 memories and their ADD versions, each set in one statement (as a large ingest batch writes them).
    await db("INSERT INTO memories (id, org_id, content, metadata, content_hash) "
             "SELECT gen_random_uuid(), :o, 'bulk ' || i, '{}', 'h' || i FROM generate_series(1, 1001) i",
             o=tenant.org_id)
    await db("INSERT INTO memory_history (id, memory_id, org_id, version, event, new_content, metadata) "
             "SELECT gen_random_uuid(), m.id, m.org_id, 1, 'ADD', m.content, '{}' FROM memories m "
             "WHERE m.org_id = :o", o=tenant.org_id)
    await scheduler.maintain_once()
    deliveries = await _arrived(receiver, path, 2)
    sizes = sorted(len(d.event["data"]["memory_ids"]) for d in deliveries)
    assert sizes == [1, 1000] and all(d.verified and d.event["type"] == "memory.created" for d in deliveries)
    stored = {str(r[0]) for r in await db("SELECT id FROM memories WHERE org_id = :o", o=tenant.org_id)}
    assert {i for d in deliveries for i in d.event["data"]["memory_ids"]} == stored
    assert await db("SELECT 1 FROM webhook_outbox WHERE org_id = :o", o=tenant.org_id) == []
