"""Fact extraction (`infer`), memory history and duplicate detection, end to end.

API → job row → `extract_facts` actor on the `llm` queue → the tests' OpenAI-compatible server, scripted
per test: each test's memories name a person (`marker`, e.g. "Zq3fa9c1b2d4") that appears in the
messages it sends and in the facts it scripts, so both the extraction call and the decision call carry
it and take the test's scripted answers. Each test has an organization of its own (`tenant`).
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from schemas.permissions import Role
from tests.support.sse import finish, follow


@pytest.fixture
async def api(stack, tenant):
    """The test's own organization, as its owner."""
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=httpx.Timeout(30, read=120)
                                 ) as client:
        yield client


@pytest.fixture
async def server(stack):
    """The tests' OpenAI-compatible model server."""
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as client:
        yield client


@pytest.fixture
def marker() -> str:
    return f"Zq{uuid.uuid4().hex[:10]}"


async def configure_llm(api: httpx.AsyncClient, stack, **fields) -> None:
    """Make the tests' model server the organization's default provider (quick to give up, for short tests)."""
    body = {"name": "test", "model": "test-model", "base_url": stack.model_url + "/v1", "api_key": "k",
            "max_retries": 1, "timeout_seconds": 10, "is_default": True} | fields
    response = await api.post("/api/v1/llm/configs", json=body)
    assert response.status_code == 201, response.text


@pytest.fixture
async def llm(api, stack):
    await configure_llm(api, stack)


async def script(server: httpx.AsyncClient, marker: str, *responses: dict) -> None:
    response = await server.post("/scripts", json={"marker": marker, "responses": list(responses)})
    assert response.status_code == 200, response.text


def facts(*texts: str) -> dict:
    return {"content": json.dumps({"facts": list(texts)})}


def decisions(*items: dict) -> dict:
    return {"content": json.dumps({"decisions": list(items)})}


async def chat_requests(server: httpx.AsyncClient, marker: str) -> list[dict]:
    response = await server.get("/chat/requests", params={"contains": marker})
    response.raise_for_status()
    return response.json()


async def infer(api: httpx.AsyncClient, scope: str, *messages: str) -> dict:
    """Send a conversation with `infer` and wait for its job to end."""
    response = await api.post("/api/v1/memories", json={
        "infer": True, "user_id": scope, "messages": [{"role": "user", "content": m} for m in messages]})
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "extract_facts"
    return await finish(api, response.json()["id"])


async def ingest(api: httpx.AsyncClient, scope: str, *contents: str, **extra) -> dict:
    response = await api.post("/api/v1/memories", json={"items": [{"content": c} for c in contents],
                                                        "user_id": scope, **extra})
    assert response.status_code == 202, response.text
    job = await finish(api, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


async def live(api: httpx.AsyncClient, scope: str) -> dict[str, dict]:
    """The scope's live memories by content."""
    items = (await api.get("/api/v1/memories", params={"user_id": scope, "limit": 500})).json()["items"]
    return {m["content"]: m for m in items}


async def history(api: httpx.AsyncClient, memory_id: str) -> list[dict]:
    response = await api.get(f"/api/v1/memories/{memory_id}/history")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def similarity_order(server: httpx.AsyncClient, query: str, texts: list[str]) -> list[str]:
    """`texts` by cosine similarity to `query`, as the job ranks its candidates (same model, same server)."""
    response = await server.post("/v1/embeddings", json={"model": "m", "input": [query, *texts]})
    vectors = [d["embedding"] for d in response.json()["data"]]
    score = {t: sum(a * b for a, b in zip(vectors[0], v, strict=True)) for t, v in zip(texts, vectors[1:], strict=True)}
    return sorted(texts, key=lambda t: -score[t])


def decision_prompt(requests: list[dict]) -> dict:
    """What the decision call showed the model: its user message, as JSON."""
    [body] = [r for r in requests if "stored_memories" in r["messages"][-1]["content"]]
    return json.loads(body["messages"][-1]["content"])


# --- fact extraction -------------------------------------------------------------------------------

async def test_infer_without_a_provider_is_422_llm_not_configured_and_queues_nothing(api, tenant, scope, db):
    response = await api.post("/api/v1/memories", json={
        "infer": True, "user_id": scope, "messages": [{"role": "user", "content": "I live in Paris"}]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "llm_not_configured"
    assert "/api/v1/llm/configs" in error["message"] and "AGENTMEM_LLM_MODEL" in error["message"]
    assert await db("SELECT count(*) FROM jobs WHERE org_id = :org", org=tenant.org_id) == [(0,)]
    assert await live(api, scope) == {}


async def test_one_job_applies_add_update_delete_and_noop(api, llm, server, scope, marker):
    m = marker
    stored = [f"{m} lives in Paris", f"{m} has a dog named Rex", f"{m} likes pizza"]
    await ingest(api, scope, *stored)
    before = await live(api, scope)
    new_facts = [f"{m} moved to Lisbon", f"{m} gave the dog Rex away", f"{m} enjoys pizza", f"{m} plays chess"]
    # The job shows the stored memories under small ids, in the order of their similarity to the first fact.
    ids = {text: n for n, text in enumerate(await similarity_order(server, new_facts[0], stored))}
    await script(server, m, facts(*new_facts), decisions(
        {"fact": 0, "event": "UPDATE", "id": ids[stored[0]], "text": f"{m} lives in Lisbon"},
        {"fact": 1, "event": "DELETE", "id": ids[stored[1]]},
        {"fact": 2, "event": "NOOP", "id": ids[stored[2]]},
        {"fact": 3, "event": "ADD", "text": f"{m} plays chess"}))

    job = await infer(api, scope, f"Hi! I'm {m}. I moved to Lisbon last month and gave my dog Rex to my sister.",
                      "I really enjoy pizza, and I play chess on Sundays.")

    assert job["status"] == "succeeded", job
    result = job["result"]
    # Fact 1 had only a DELETE: the fact itself is kept too (DELETE + ADD), never lost.
    assert result["events"] == {"ADD": 2, "UPDATE": 1, "DELETE": 1, "NOOP": 1}
    assert result["rejected"] == [] and result["facts"] == new_facts
    after = await live(api, scope)
    assert set(after) == {f"{m} lives in Lisbon", f"{m} likes pizza", f"{m} plays chess", f"{m} gave the dog Rex away"}
    paris, dog, pizza = (before[s]["id"] for s in stored)
    assert after[f"{m} lives in Lisbon"]["id"] == paris and after[f"{m} lives in Lisbon"]["embedding_status"] == "ready"
    assert after[f"{m} likes pizza"] == before[stored[2]]
    assert result["memory_ids"]["updated"] == [paris] and result["memory_ids"]["deleted"] == [dog]
    assert sorted(result["memory_ids"]["added"]) == sorted(
        [after[f"{m} plays chess"]["id"], after[f"{m} gave the dog Rex away"]["id"]])
    assert pizza not in json.dumps(result["memory_ids"])
    assert job["usage"]["calls"] == 2 and job["usage"]["prompt_tokens"] > 0
    # The model saw small ids, never a memory's real id.
    requests = await chat_requests(server, m)
    shown = decision_prompt(requests)
    assert {s["text"]: s["id"] for s in shown["stored_memories"]} == ids
    assert not any(mem["id"] in json.dumps(r) for r in requests for mem in before.values())

    search = await api.post("/api/v1/memories/search", json={"query": "Where does he live?", "user_id": scope,
                                                             "mode": "vector", "top_k": 1})
    assert search.json()["hits"][0]["memory"]["content"] == f"{m} lives in Lisbon"


async def test_invented_ids_are_rejected_and_nothing_else_is_touched(api, llm, server, scope, marker, tenant, db):
    m = marker
    await ingest(api, scope, f"{m} lives in Paris")
    await ingest(api, scope + "-elsewhere", f"{m} lives in Rome")
    snapshot = "SELECT id, content, updated_at, deleted_at FROM memories WHERE org_id = :org ORDER BY id"
    before = await db(snapshot, org=tenant.org_id)
    await script(server, m, facts(f"{m} lives in Lisbon"), decisions(
        {"fact": 0, "event": "UPDATE", "id": 7, "text": f"{m} lives in Lisbon"},
        {"fact": 0, "event": "DELETE", "id": 99}))

    job = await infer(api, scope, f"I'm {m} and I moved to Lisbon")

    assert job["status"] == "succeeded", job
    assert [(r["reason"], r["decision"].get("id")) for r in job["result"]["rejected"]] == [
        ("unknown_id", 7), ("unknown_id", 99)]
    # No row an invented id could name was touched; the fact itself is kept (its only decisions were rejected).
    after = await db(snapshot, org=tenant.org_id)
    [added] = [row for row in after if row not in before]
    assert added.content == f"{m} lives in Lisbon" and set(before) < set(after) and len(after) == len(before) + 1
    assert job["result"]["events"] == {"ADD": 1, "UPDATE": 0, "DELETE": 0, "NOOP": 0}
    assert job["result"]["decisions"] == [{"fact": 0, "event": "ADD", "source": "fallback", "memory_id": str(added.id),
                                           "text": f"{m} lives in Lisbon"}]


async def test_a_contradiction_updates_the_old_memory_and_history_shows_both_versions(api, llm, server, scope,
                                                                                     marker, tenant):
    m = marker
    # The first conversation finds no memory in the scope: its fact is added without a decision call.
    await script(server, m, facts(f"{m} lives in Paris"), facts(f"{m} lives in Lisbon"), decisions(
        {"fact": 0, "event": "UPDATE", "id": 0, "text": f"{m} lives in Lisbon"}))
    first = await infer(api, scope, f"I'm {m} and I live in Paris")
    assert first["status"] == "succeeded" and first["result"]["events"]["ADD"] == 1, first
    assert first["usage"]["calls"] == 1
    [memory_id] = first["result"]["memory_ids"]["added"]

    second = await infer(api, scope, f"I'm {m}. I moved to Lisbon")

    assert second["status"] == "succeeded", second
    assert second["result"]["memory_ids"] == {"added": [], "updated": [memory_id], "deleted": []}
    memories = await live(api, scope)
    assert list(memories) == [f"{m} lives in Lisbon"] and memories[f"{m} lives in Lisbon"]["id"] == memory_id
    versions = await history(api, memory_id)
    assert [(v["version"], v["event"], v["old_content"], v["new_content"], v["job_id"]) for v in versions] == [
        (1, "ADD", None, f"{m} lives in Paris", first["id"]),
        (2, "UPDATE", f"{m} lives in Paris", f"{m} lives in Lisbon", second["id"])]
    owner_key = f"api_key:{tenant.key_ids[Role.OWNER]}"
    assert all(v["actor"] == owner_key for v in versions)
    assert versions[1]["metadata"] == {"source": "extraction", "fact": f"{m} lives in Lisbon"}


async def test_the_same_fact_twice_is_a_noop_without_a_decision_call(api, llm, server, scope, marker):
    m = marker
    await script(server, m, facts(f"{m} is allergic to peanuts"), facts(f"{m} is allergic to peanuts"))
    first = await infer(api, scope, f"I'm {m}, allergic to peanuts")
    second = await infer(api, scope, f"Reminder: {m} here, still allergic to peanuts")

    assert second["status"] == "succeeded", second
    [memory_id] = first["result"]["memory_ids"]["added"]
    assert second["result"]["events"] == {"ADD": 0, "UPDATE": 0, "DELETE": 0, "NOOP": 1}
    assert second["result"]["decisions"] == [{"fact": 0, "event": "NOOP", "source": "exact_duplicate",
                                              "memory_id": memory_id, "similarity": 1.0}]
    assert list(await live(api, scope)) == [f"{m} is allergic to peanuts"]
    # Two extraction calls, no decision call.
    assert second["usage"]["calls"] == 1 and len(await chat_requests(server, m)) == 2
    assert [v["version"] for v in await history(api, memory_id)] == [1]


async def test_a_near_duplicate_is_a_noop_but_a_negation_goes_to_the_llm(api, llm, server, scope, marker):
    m = marker
    await ingest(api, scope, f"{m} is allergic to peanuts.")
    await script(server, m, facts(f"{m} is allergic to peanuts", f"{m} is not allergic to shellfish",
                                  f"{m} is not allergic to peanuts"),
                 decisions({"fact": 0, "event": "ADD"}, {"fact": 1, "event": "UPDATE", "id": 0,
                                                         "text": f"{m} is not allergic to peanuts"}))
    job = await infer(api, scope, f"{m}: turns out I am not allergic to peanuts after all, nor to shellfish")

    assert job["status"] == "succeeded", job
    by_fact = {d["fact"]: d for d in job["result"]["decisions"]}
    assert by_fact[0]["event"] == "NOOP" and by_fact[0]["source"] == "near_duplicate"
    assert by_fact[0]["similarity"] >= 0.95
    shown = decision_prompt(await chat_requests(server, m))
    # Only the two facts a near-duplicate test can't settle were asked about.
    assert [f["text"] for f in shown["new_facts"]] == [f"{m} is not allergic to shellfish",
                                                       f"{m} is not allergic to peanuts"]
    assert set(await live(api, scope)) == {f"{m} is not allergic to shellfish", f"{m} is not allergic to peanuts"}


async def test_a_job_redelivered_after_applying_changes_nothing_twice(api, llm, server, scope, marker, stack, db):
    m = marker
    await script(server, m, facts(f"{m} collects stamps", f"{m} lives in Oslo"))
    job = await infer(api, scope, f"I'm {m}: I collect stamps and live in Oslo")
    assert job["status"] == "succeeded" and job["result"]["events"]["ADD"] == 2, job
    memories = await db("SELECT id, content, updated_at FROM memories WHERE user_id = :s ORDER BY id", s=scope)
    versions = await db("SELECT id FROM memory_history WHERE job_id = :j ORDER BY id", j=job["id"])
    # As if its worker died after the apply transaction committed, before the job was marked done.
    await db("UPDATE jobs SET status = 'running', worker = 'gone:1', finished_at = NULL, "
             "lease_expires_at = now() - interval '1 minute' WHERE id = :j", j=job["id"])
    ran = stack.run("scheduler", "--once")
    assert ran.returncode == 0, ran.stderr

    again = await finish(api, job["id"])

    assert again["status"] == "succeeded" and again["attempts"] == 2, again
    assert again["result"] == job["result"]
    assert await db("SELECT id, content, updated_at FROM memories WHERE user_id = :s ORDER BY id", s=scope) == memories
    assert await db("SELECT id FROM memory_history WHERE job_id = :j ORDER BY id", j=job["id"]) == versions
    assert len(await chat_requests(server, m)) == 1


async def test_malformed_json_twice_fails_the_job_llm_output_invalid(api, llm, server, scope, marker):
    await script(server, marker, {"content": "Sure! Facts: Paris"}, {"content": '{"facts": "Paris"}'})
    job = await infer(api, scope, f"I'm {marker} and I live in Paris")

    assert job["status"] == "failed" and job["error"]["code"] == "llm_output_invalid", job
    assert job["attempts"] == 1  # a permanent failure: not retried
    assert job["usage"]["calls"] == 2  # the answer and its one repair
    assert await live(api, scope) == {}


async def test_a_429_with_retry_after_is_waited_out_and_the_job_succeeds(api, llm, server, scope, marker):
    await script(server, marker, {"status": 429, "retry_after": 1}, facts(f"{marker} lives in Oslo"))
    job = await infer(api, scope, f"I'm {marker} and I live in Oslo")

    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert list(await live(api, scope)) == [f"{marker} lives in Oslo"]
    assert len(await chat_requests(server, marker)) == 2


async def test_llm_outage_retries_the_job_then_fails_llm_unavailable(api, stack, server, scope, marker):
    # One call per attempt (no retries inside the client), a 1 s timeout: a 500, a timeout, a 500.
    await configure_llm(api, stack, max_retries=0, timeout_seconds=1)
    await script(server, marker, {"status": 500}, {"delay": 3, **facts("too late")}, {"status": 500})
    response = await api.post("/api/v1/memories", json={
        "infer": True, "user_id": scope, "messages": [{"content": f"I'm {marker}, living in Oslo"}]})
    assert response.status_code == 202, response.text

    events = await follow(api, response.json()["id"], last_event_id="0-0")
    job = (await api.get(f"/api/v1/jobs/{response.json()['id']}")).json()

    assert job["status"] == "failed" and job["error"]["code"] == "llm_unavailable", job
    assert job["attempts"] == job["max_attempts"] == 3
    retries = [e.data["data"]["error"] for e in events if e.event == "retrying"]
    assert [r["code"] for r in retries] == ["llm_unavailable", "llm_unavailable"]
    # A timeout reads as any other unreachable provider does (core/llm_retry.py): the log has the cause.
    assert "could not be reached or gave no usable answer (timeout 1 s)" in retries[1]["message"]
    assert len(await chat_requests(server, marker)) == 3
    assert await live(api, scope) == {}


# --- history -----------------------------------------------------------------------------------------

async def test_history_records_ingest_patch_and_delete_and_outlives_the_memory(api, scope, tenant):
    job = await ingest(api, scope, "Prefers window seats")
    memory_id = job["result"]["first_memory_id"]
    patched = await api.patch(f"/api/v1/memories/{memory_id}", json={"content": "Prefers aisle seats"})
    assert patched.status_code == 200, patched.text
    same = await api.patch(f"/api/v1/memories/{memory_id}", json={"metadata": {"topic": "travel"}})
    assert same.status_code == 200  # metadata only: not a new version of the text
    assert (await api.delete(f"/api/v1/memories/{memory_id}")).status_code == 204
    assert (await api.get(f"/api/v1/memories/{memory_id}")).status_code == 404

    versions = await history(api, memory_id)

    assert [(v["version"], v["event"], v["old_content"], v["new_content"]) for v in versions] == [
        (1, "ADD", None, "Prefers window seats"),
        (2, "UPDATE", "Prefers window seats", "Prefers aisle seats"),
        (3, "DELETE", "Prefers aisle seats", None)]
    assert versions[0]["job_id"] == job["id"] and versions[0]["metadata"] == {"source": "ingest"}
    assert [v["job_id"] for v in versions[1:]] == [None, None]
    assert all(v["metadata"]["source"] == "api" and v["metadata"]["request_id"] for v in versions[1:])
    assert {v["actor"] for v in versions} == {f"api_key:{tenant.key_ids[Role.OWNER]}"}
    page = (await api.get(f"/api/v1/memories/{memory_id}/history", params={"limit": 2})).json()
    rest = (await api.get(f"/api/v1/memories/{memory_id}/history", params={"cursor": page["next_cursor"]})).json()
    assert [v["version"] for v in page["items"] + rest["items"]] == [1, 2, 3] and rest["next_cursor"] is None


async def test_another_organizations_memory_history_is_404(api, stack, other_tenant, scope):
    job = await ingest(api, scope, "The safe code is 4711")
    memory_id = job["result"]["first_memory_id"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as other:
        reply = await other.get(f"/api/v1/memories/{memory_id}/history")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert "4711" not in reply.text
    assert (await api.get(f"/api/v1/memories/{uuid.uuid4()}/history")).status_code == 404
    assert (await api.get(f"/api/v1/memories/{memory_id}/history", params={"cursor": "x"})).status_code == 422


# --- duplicates without an LLM -----------------------------------------------------------------------

async def test_deduplicate_skips_exact_and_near_duplicates_in_scope_and_in_the_batch(api, scope, server):
    first = await ingest(api, scope, "I live in Paris", "I am allergic to peanuts")
    paris = first["result"]["first_memory_id"]
    await ingest(api, scope + "-other", "I love hiking")
    batch = ["I live in Paris",               # 0: exact duplicate of a stored memory
             "i live in paris.",              # 1: near duplicate of it
             "I am not allergic to peanuts",  # 2: a contradiction, kept
             "I love hiking",                 # 3: only stored in another scope, kept
             "I love hiking",                 # 4: exact duplicate of item 3
             "I love hiking!",                # 5: near duplicate of item 3
             "I really love hiking"]          # 6: says more than item 3, kept

    job = await ingest(api, scope, *batch, deduplicate=True)

    result = job["result"]
    assert result["skipped_duplicates"] == 4 and result["inserted"] == 3
    item3 = str(uuid.uuid5(uuid.UUID(job["id"]), "3"))
    assert [(d["index"], d["memory_id"], d["match"]) for d in result["duplicates"]] == [
        (0, paris, "exact"), (1, paris, "near"), (4, item3, "exact"), (5, item3, "near")]
    assert all(d["similarity"] >= 0.95 for d in result["duplicates"])
    assert set(await live(api, scope)) == {"I live in Paris", "I am allergic to peanuts",
                                           "I am not allergic to peanuts", "I love hiking", "I really love hiking"}
    # Without the option every item is stored, duplicates included (throughput first).
    plain = await ingest(api, scope, "I live in Paris")
    assert "skipped_duplicates" not in plain["result"] and plain["result"]["inserted"] == 1


async def test_facts_beyond_the_memory_quota_fail_the_job_and_nothing_is_written(api, llm, server, scope, marker,
                                                                                tenant, db):
    await ingest(api, scope, f"{marker} has a cat")
    await db("UPDATE organizations SET limits = CAST(:l AS jsonb) WHERE id = :o", l='{"max_memories": 2}',
             o=tenant.org_id)
    # One more memory fits, so the job is accepted; the two facts it learns do not.
    await script(server, marker, facts(f"{marker} collects stamps", f"{marker} lives in Oslo"), decisions(
        {"fact": 0, "event": "ADD", "text": f"{marker} collects stamps"},
        {"fact": 1, "event": "ADD", "text": f"{marker} lives in Oslo"}))
    job = await infer(api, scope, f"I'm {marker}: I collect stamps and live in Oslo")

    assert job["status"] == "failed" and job["error"]["code"] == "quota_max_memories", job["error"]
    assert "storing 2 more memories" in job["error"]["message"]
    assert list(await live(api, scope)) == [f"{marker} has a cat"]
    # Full now: the next request is refused before a job exists.
    await ingest(api, scope, f"{marker} has a dog")
    refused = await api.post("/api/v1/memories", json={
        "infer": True, "user_id": scope, "messages": [{"role": "user", "content": "I like tea"}]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota_max_memories"
