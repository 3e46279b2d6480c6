"""Core-memory blocks end to end: versions, revert, optimistic concurrency, hard limits, and `block_rewrite` jobs
run by the real workers (offline strategies, and `summarize` against the tests' OpenAI-compatible server),
including a write that lands while a rewrite is in flight."""

from __future__ import annotations

import uuid

import httpx

from schemas.permissions import Role
from tests.support.sse import finish, follow

FACTS = ["Alice is a nurse in Lisbon.", "She works night shifts at the hospital.", "Her sister Maria lives in Porto.",
         "Alice is allergic to peanuts.", "She likes hiking on weekends.", "She is learning Portuguese grammar.",
         "Her cat is called Miso.", "She prefers short answers."]


async def create(client: httpx.AsyncClient, **body) -> dict:
    response = await client.post("/api/v1/blocks", json={"label": "human", **body})
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == f'"{response.json()["version"]}"'
    return response.json()


async def versions(client: httpx.AsyncClient, block_id: str) -> list[dict]:
    response = await client.get(f"/api/v1/blocks/{block_id}/versions")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def patch(client: httpx.AsyncClient, block_id: str, body: dict, version: int | None = None) -> httpx.Response:
    headers = {"If-Match": f'"{version}"'} if version is not None else {}
    return await client.patch(f"/api/v1/blocks/{block_id}", json=body, headers=headers)


async def rewrite_jobs(db, block_id: str) -> int:
    [[count]] = await db("SELECT count(*) FROM jobs WHERE kind = 'block_rewrite' AND payload->>'block_id' = :b",
                         b=block_id)
    return count


async def test_every_change_is_a_version_and_a_revert_is_a_new_one(client):
    block = await create(client, value="Name: Alice.", limit=500, description="Facts about the user")
    assert (block["version"], block["chars"], block["limit"], block["rewrite_job_id"]) == (1, 12, 500, None)
    changed = await patch(client, block["id"], {"value": "Name: Alice. Nurse."}, version=1)
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.headers["etag"] == '"2"'
    relabelled = await patch(client, block["id"], {"label": "user"})  # no If-Match: any version, still versioned
    assert relabelled.json()["version"] == 3
    reverted = await client.post(f"/api/v1/blocks/{block['id']}/revert", json={"version": 1},
                                 headers={"If-Match": '"3"'})
    assert reverted.status_code == 200, reverted.text
    assert (reverted.json()["version"], reverted.json()["value"], reverted.json()["label"]) == (4, "Name: Alice.",
                                                                                               "human")
    history = await versions(client, block["id"])
    assert [(v["version"], v["reason"], v["value"], v["label"]) for v in history] == [
        (1, "create", "Name: Alice.", "human"), (2, "update", "Name: Alice. Nurse.", "human"),
        (3, "update", "Name: Alice. Nurse.", "user"), (4, "revert", "Name: Alice.", "human")]
    assert history[3]["details"] == {"reverted_to": 1} and history[0]["actor"].startswith("api_key:")
    missing = await client.post(f"/api/v1/blocks/{block['id']}/revert", json={"version": 99})
    assert missing.status_code == 404 and len(await versions(client, block["id"])) == 4
    # An unchanged PATCH makes no version.
    same = await patch(client, block["id"], {"value": "Name: Alice."})
    assert same.json()["version"] == 4


async def test_a_stale_if_match_is_409_with_the_current_version_and_changes_nothing(client):
    block = await create(client, value="v1 text", limit=500)
    assert (await patch(client, block["id"], {"value": "v2 text"}, version=1)).status_code == 200
    stale = await patch(client, block["id"], {"value": "a writer that read v1"}, version=1)
    assert stale.status_code == 409, stale.text
    error = stale.json()["error"]
    assert error["code"] == "version_conflict" and error["details"]["current_version"] == 2
    stale_delete = await client.delete(f"/api/v1/blocks/{block['id']}", headers={"If-Match": '"1"'})
    stale_revert = await client.post(f"/api/v1/blocks/{block['id']}/revert", json={"version": 1},
                                     headers={"If-Match": '"1"'})
    assert stale_delete.status_code == stale_revert.status_code == 409
    current = (await client.get(f"/api/v1/blocks/{block['id']}")).json()
    assert (current["value"], current["version"]) == ("v2 text", 2)
    assert len(await versions(client, block["id"])) == 2
    bad = await client.patch(f"/api/v1/blocks/{block['id']}", json={"value": "x"}, headers={"If-Match": "latest"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_if_match"
    deleted = await client.delete(f"/api/v1/blocks/{block['id']}", headers={"If-Match": 'W/"2"'})
    assert deleted.status_code == 204
    assert (await client.get(f"/api/v1/blocks/{block['id']}")).status_code == 404
    # A deleted block's history stays readable, ending with the deletion.
    assert [v["reason"] for v in await versions(client, block["id"])] == ["create", "update", "delete"]


async def test_user_blocks_are_listed_by_user_and_label(client, scope):
    mine = await create(client, value="Prefers tea.", user_id=scope)
    await create(client, label="persona", value="A tutor.", user_id=scope)
    await create(client, value="Someone else.", user_id=f"{scope}-other")
    listed = await client.get("/api/v1/blocks", params={"user_id": scope, "label": "human"})
    assert [b["id"] for b in listed.json()["items"]] == [mine["id"]] and listed.json()["items"][0]["user_id"] == scope
    both = await client.get("/api/v1/blocks", params={"user_id": scope, "limit": 1})
    rest = await client.get("/api/v1/blocks", params={"user_id": scope, "cursor": both.json()["next_cursor"]})
    assert len(both.json()["items"]) == len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None


async def test_a_value_over_the_limit_is_422_and_nothing_is_written(client, db):
    label = f"too-long-{uuid.uuid4().hex[:8]}"
    refused = await client.post("/api/v1/blocks", json={"label": label, "value": "x" * 101, "limit": 100})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "block_too_long"
    assert refused.json()["error"]["details"] == {"chars": 101, "limit": 100}
    assert await db("SELECT id FROM blocks WHERE label = :l", l=label) == []
    block = await create(client, value="short", limit=100)
    for body in ({"value": "y" * 101}, {"limit": 4}):
        response = await patch(client, block["id"], body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "block_too_long", response.text
    current = (await client.get(f"/api/v1/blocks/{block['id']}")).json()
    assert (current["value"], current["limit"], current["version"]) == ("short", 100, 1)


async def test_a_read_only_block_refuses_changes_and_rewrites_until_unlocked(client, db):
    block = await create(client, value="Persona: Sam.", limit=100, read_only=True)
    for response in (await patch(client, block["id"], {"value": "changed"}),
                     await client.post(f"/api/v1/blocks/{block['id']}/rewrite", json={}),
                     await client.delete(f"/api/v1/blocks/{block['id']}")):
        assert response.status_code == 409 and response.json()["error"]["code"] == "block_read_only", response.text
    assert await rewrite_jobs(db, block["id"]) == 0
    unlocked = await patch(client, block["id"], {"read_only": False, "value": "Persona: Sam, a tutor."})
    assert unlocked.status_code == 200 and unlocked.json()["version"] == 2


def progress_messages(events) -> list[str]:
    return [e.data["data"]["message"] for e in events if e.event == "progress"]


async def test_a_write_past_90_percent_queues_a_rewrite_preserve_recent_keeps_the_newest(client, db):
    start = "\n".join(FACTS[:4])  # 129 characters of 200: under the threshold
    block = await create(client, value=start, limit=200, rewrite_strategy="preserve_recent")
    assert block["rewrite_job_id"] is None and await rewrite_jobs(db, block["id"]) == 0
    full = start + "\n" + "\n".join(FACTS[4:6])  # 192 characters: past 180
    written = await patch(client, block["id"], {"value": full}, version=1)
    assert written.status_code == 200, written.text
    job_id = written.json()["rewrite_job_id"]
    assert job_id is not None
    events = await follow(client, job_id, last_event_id="0-0")
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["status"] == "succeeded" and job["kind"] == "block_rewrite", job
    result = job["result"]
    assert result["applied"] and result["strategy"] == "preserve_recent" and result["based_on"] == 2
    assert result["target_chars"] == 120 and result["chars_before"] == len(full)
    after = (await client.get(f"/api/v1/blocks/{block['id']}")).json()
    # The newest whole lines that fit in 60% of the limit, in order.
    expected = "\n".join(FACTS[3:6])
    assert after["value"] == expected and after["chars"] <= 120 and after["version"] == 3
    history = await versions(client, block["id"])
    assert [v["reason"] for v in history] == ["create", "update", "rewrite"]
    assert history[1]["value"] == full  # the text before the rewrite stays in the history
    assert history[2]["job_id"] == job_id and history[2]["details"]["based_on"] == 2
    messages = progress_messages(events)
    assert messages[0] == "attempt 1: reading the block"
    assert messages[-1] == f"applied as version 3 ({len(expected)} characters)"


async def test_preserve_important_drops_repeats_and_asides_first(client):
    lines = ["Alice is allergic to peanuts.", "Alice is a nurse at the Lisbon hospital.",
             "Alice is allergic to peanuts!", "The office printer is out of toner again.",
             "Alice works night shifts at the Lisbon hospital.", "Alice's sister Maria visits her in Lisbon."]
    value = "\n".join(lines)
    block = await create(client, value=value, limit=len(value) + 5, rewrite_strategy="preserve_important")
    assert block["rewrite_job_id"] is not None  # created already past 90%
    job = await finish(client, block["rewrite_job_id"])
    assert job["status"] == "succeeded" and job["result"]["strategy"] == "preserve_important", job
    value = (await client.get(f"/api/v1/blocks/{block['id']}")).json()["value"]
    kept = value.split("\n")
    assert len(value) <= job["result"]["target_chars"] and value.count("peanuts") == 1 and "printer" not in value
    assert all(line in lines for line in kept) and [lines.index(k) for k in kept] == sorted(lines.index(k)
                                                                                              for k in kept)


async def test_off_never_rewrites_by_itself_and_an_explicit_rewrite_honours_its_idempotency_key(client, db):
    block = await create(client, value="x", limit=100, rewrite_strategy="off")
    full = await patch(client, block["id"], {"value": "Fact one. " * 9 + "Fact two."})
    assert full.json()["rewrite_job_id"] is None  # `off`: never rewritten automatically
    key = f"rewrite-{uuid.uuid4().hex}"
    first = await client.post(f"/api/v1/blocks/{block['id']}/rewrite", headers={"Idempotency-Key": key},
                              json={"strategy": "preserve_recent", "target_chars": 30})
    again = await client.post(f"/api/v1/blocks/{block['id']}/rewrite", headers={"Idempotency-Key": key},
                              json={"strategy": "preserve_recent", "target_chars": 30})
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    job = await finish(client, first.json()["id"])
    assert job["result"]["applied"] and job["result"]["target_chars"] == 30, job
    assert (await client.get(f"/api/v1/blocks/{block['id']}")).json()["value"] == "Fact one. Fact one. Fact two."
    assert await rewrite_jobs(db, block["id"]) == 1



async def script(stack, marker: str, responses: list[dict]) -> None:
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as model:
        response = await model.post("/scripts", json={"marker": marker, "responses": responses})
        assert response.status_code == 200, response.text


async def chat_requests(stack, marker: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as model:
        return (await model.get("/chat/requests", params={"contains": marker})).json()


async def test_summarize_rewrites_through_the_llm_and_asks_again_when_too_long(llm_tenant, stack):
    marker = f"marker-{uuid.uuid4().hex}"
    too_long = "Alice: nurse, Lisbon, nights, peanut allergy, sister Maria in Porto, hiking. " * 3
    rewritten = "Alice: nurse in Lisbon (nights); peanut allergy; sister Maria (Porto); hikes."
    await script(stack, marker, [{"content": too_long}, {"content": rewritten}])
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(Role.MEMBER),
                                 timeout=httpx.Timeout(30, read=120)) as member:
        value = "\n".join(FACTS) + f"\nCode word: {marker}."
        block = await create(member, value=value, limit=len(value) + 10, rewrite_strategy="auto")
        job = await finish(member, block["rewrite_job_id"])
        after = (await member.get(f"/api/v1/blocks/{block['id']}")).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["strategy"] == "summarize" and job["result"]["llm_calls"] == 2
    assert job["usage"]["calls"] == 2 and after["value"] == rewritten
    first, second = await chat_requests(stack, marker)
    assert value in first["messages"][-1]["content"] and f"at most {job['result']['target_chars']}" in \
        first["messages"][-1]["content"]
    assert second["messages"][-2] == {"role": "assistant", "content": too_long.strip()}


async def test_explicit_summarize_without_a_provider_is_422_and_queues_nothing(tenant, stack, db):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as owner:
        block = await create(owner, value="Some facts.", limit=100)
        response = await owner.post(f"/api/v1/blocks/{block['id']}/rewrite", json={"strategy": "summarize"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "llm_not_configured"
        setting = await patch(owner, block["id"], {"rewrite_strategy": "summarize"})
        assert setting.status_code == 422 and setting.json()["error"]["code"] == "llm_not_configured"
    assert await rewrite_jobs(db, block["id"]) == 0


async def wait_for_rewrite_step(client: httpx.AsyncClient, job_id: str) -> None:
    """Until the job has read the block and started computing its rewrite (the step before its swap)."""
    await follow(client, job_id, last_event_id="0-0", timeout=60,
                 stop_after=lambda e: e.event == "progress" and "rewriting version" in e.data["data"]["message"])


async def test_a_write_racing_a_summarize_rewrite_is_reread_never_clobbered(llm_tenant, stack):
    marker = f"marker-{uuid.uuid4().hex}"
    # The first answer comes late: the racing write lands while the model is still writing.
    await script(stack, marker, [{"delay": 4, "content": "Stale rewrite of the old text."},
                                 {"content": "Alice: nurse in Lisbon; moved to Madrid in May."}])
    raced = "Update: Alice moved to Madrid in May."
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as owner:
        value = "\n".join(FACTS) + f"\nCode word: {marker}."
        block = await create(owner, value=value, limit=400)
        rewrite = await owner.post(f"/api/v1/blocks/{block['id']}/rewrite", json={"strategy": "summarize"})
        assert rewrite.status_code == 202, rewrite.text
        job_id = rewrite.json()["id"]
        await wait_for_rewrite_step(owner, job_id)
        racing = await patch(owner, block["id"], {"value": value + "\n" + raced}, version=1)
        assert racing.status_code == 200, racing.text
        assert racing.json()["version"] == 2
        job = await finish(owner, job_id)
        history = await versions(owner, block["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["attempts"] == 2 and job["result"]["based_on"] == 2
    assert [(v["version"], v["reason"]) for v in history] == [(1, "create"), (2, "update"), (3, "rewrite")]
    assert raced in history[1]["value"] and history[2]["value"] == "Alice: nurse in Lisbon; moved to Madrid in May."
    stale, fresh = await chat_requests(stack, marker)
    assert raced not in stale["messages"][-1]["content"] and raced in fresh["messages"][-1]["content"]


async def test_a_write_racing_an_offline_rewrite_is_reread_never_clobbered(client):
    # The embedding server answers texts carrying @@slow@@ late: the write lands while the job embeds.
    value = "\n".join(FACTS) + "\nNote @@slow:3@@ kept."
    raced = "Newest: Alice moved to Madrid."
    block = await create(client, value=value, limit=1000, rewrite_strategy="preserve_important")
    assert block["rewrite_job_id"] is None
    racing_value = value + "\n" + raced
    response = await client.post(f"/api/v1/blocks/{block['id']}/rewrite", json={"target_chars": 120})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await wait_for_rewrite_step(client, job_id)
    racing = await patch(client, block["id"], {"value": racing_value}, version=1)
    assert racing.status_code == 200, racing.text
    job = await finish(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["result"]["attempts"] == 2 and job["result"]["based_on"] == 2
    assert job["result"]["strategy"] == "preserve_important"
    history = await versions(client, block["id"])
    assert [v["reason"] for v in history] == ["create", "update", "rewrite"]
    assert history[1]["value"] == racing_value and len(history[2]["value"]) <= 120


async def test_writes_past_the_threshold_share_the_rewrite_still_queued(client, main_tenant, db):
    block = await create(client, value="x", limit=100, rewrite_strategy="preserve_recent")
    # A rewrite queued for the block whose message no worker has taken yet (no scheduler runs in the tests).
    waiting = uuid.uuid4()
    await db("INSERT INTO jobs (id, org_id, kind, status, payload, progress_total, max_attempts) VALUES (:id, :org, "
             "'block_rewrite', 'queued', CAST(:payload AS jsonb), 2, 3)", id=waiting, org=main_tenant.org_id,
             payload=f'{{"block_id": "{block["id"]}", "strategy": "preserve_recent", "trigger": "threshold"}}')
    first = await patch(client, block["id"], {"value": "Fact one. " * 9 + "Fact 2."})
    second = await patch(client, block["id"], {"value": "Fact one. " * 9 + "Fact 3."})
    assert first.json()["rewrite_job_id"] == second.json()["rewrite_job_id"] == str(waiting)
    assert await rewrite_jobs(db, block["id"]) == 1
    assert (await client.post(f"/api/v1/jobs/{waiting}/cancel")).status_code in (200, 202)


async def test_a_rewrite_with_nothing_to_do_ends_as_a_no_op_that_says_why(client):
    block = await create(client, value="Short already.", limit=100)
    response = await client.post(f"/api/v1/blocks/{block['id']}/rewrite",
                                 json={"strategy": "preserve_recent", "target_chars": 50})
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"block_id": block["id"], "applied": False, "reason": "within_target", "attempts": 1,
                             "version": 1}
    assert [v["reason"] for v in await versions(client, block["id"])] == ["create"]
