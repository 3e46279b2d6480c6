"""Summaries end to end: API → job row → `summarize` actor on the `llm` queue → a summary memory.

Extractive summaries use the real embedding model (through the tests' model server); abstractive ones
call the tests' OpenAI-compatible server, scripted per test with a marker.
"""

from __future__ import annotations

import random
import uuid

import httpx

from core.db import session_scope
from pipelines.jobs import rows as jobs
from pipelines.jobs.runner import JobContext
from pipelines.splitting import chunk_by_chars
from pipelines.summaries import summarize as summarization
from schemas.enums import JobKind, JobStatus
from schemas.permissions import Role
from schemas.summaries import SummaryCreate
from tests.support.sse import finish, follow

TRIP = [
    "User: I'm planning a trip to Lisbon with my sister Alice in the first week of June.",
    "Assistant: Lovely! Do you already have flights booked for the Lisbon trip?",
    "User: Not yet. We want morning flights from Berlin to Lisbon on June 2nd, and back on June 9th.",
    "Assistant: Noted. What kind of hotel would you like in Lisbon?",
    "User: A quiet hotel by the river in Lisbon, under 150 euros a night. Alice is allergic to cats.",
    "User: Unrelated, but the office printer is out of toner again.",
    "Assistant: I will look for riverside hotels in Lisbon under 150 euros for June 2nd to 9th.",
    "User: Great. Please also book a day trip from Lisbon to Sintra for June 5th.",
]


async def ingest(client: httpx.AsyncClient, contents: list[str], **scope: str) -> list[str]:
    """Store memories as one batch and return their ids in conversation order."""
    response = await client.post("/api/v1/memories", json={"items": [{"content": c} for c in contents], **scope})
    assert response.status_code == 202, response.text
    job = await finish(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    # Ingest ids are uuid5(job id, index): the batch's order is the conversation's.
    ids = [str(uuid.uuid5(uuid.UUID(job["id"]), str(i))) for i in range(len(contents))]
    assert job["result"]["first_memory_id"] == ids[0]
    return ids


async def summarize(client: httpx.AsyncClient, body: dict, **headers: str) -> dict:
    response = await client.post("/api/v1/summaries", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "summarize" and response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    return job


def turn_of(line: str, turns: list[str]) -> int:
    """The turn a line of an extractive summary comes from: its text verbatim, under the turn's speaker tag."""
    speaker, _, said = line.partition(": ")
    found = [n for n, turn in enumerate(turns) if line in turn or (turn.startswith(f"{speaker}: ") and said in turn)]
    assert found, f"{line!r} is in no turn"
    return found[0]


async def summary_jobs(db, org_id) -> int:
    [[count]] = await db("SELECT count(*) FROM jobs WHERE org_id = :o AND kind = 'summarize'", o=org_id)
    return count


async def test_extractive_summary_of_a_run_is_a_searchable_memory_linked_to_its_sources(client, scope):
    run = f"{scope}-run"
    ids = await ingest(client, TRIP, user_id=scope, run_id=run)
    job = await summarize(client, {"run_id": run, "target_chars": 300})
    done = await finish(client, job["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["method"] == "extractive" and result["sources"] == len(TRIP) and result["chunks"] == 1
    assert result["chars_in"] == sum(len(t) for t in TRIP) and 0 < result["chars_out"] <= 300
    assert done["usage"] is None  # no LLM was called

    summary = (await client.get(f"/api/v1/memories/{result['memory_id']}")).json()
    assert summary["metadata"] == {"kind": "summary", "method": "extractive", "source_ids": ids,
                                   "source_count": len(TRIP), "job_id": job["id"], "chunks": 1}
    assert (summary["user_id"], summary["run_id"], summary["agent_id"]) == (scope, run, None)
    assert summary["embedding_status"] == "ready" and summary["source_job_id"] == job["id"]
    [version] = (await client.get(f"/api/v1/memories/{result['memory_id']}/history")).json()["items"]
    assert (version["version"], version["event"], version["job_id"]) == (1, "ADD", job["id"])
    content = summary["content"]
    assert len(content) == result["chars_out"] <= 300 and "Lisbon" in content
    assert "printer" not in content  # the aside is not what the conversation is about
    # Extractive: every line is sentences of one turn, verbatim, under the turn's speaker, in conversation order.
    positions = [turn_of(line, TRIP) for line in content.split("\n")]
    assert positions == sorted(positions), content

    response = await client.post("/api/v1/memories/search", json={
        "query": "Where is the holiday with Alice going?", "user_id": scope, "metadata": {"kind": "summary"}})
    assert response.status_code == 200, response.text
    assert [h["memory"]["id"] for h in response.json()["hits"]] == [result["memory_id"]]


async def test_summarizing_the_run_again_leaves_earlier_summaries_out(client, scope):
    run = f"{scope}-run"
    await ingest(client, TRIP[:4], user_id=scope, run_id=run)
    first = await finish(client, (await summarize(client, {"run_id": run, "mode": "extractive"}))["id"])
    second = await finish(client, (await summarize(client, {"run_id": run, "mode": "extractive"}))["id"])
    assert first["result"]["sources"] == second["result"]["sources"] == 4
    assert first["result"]["memory_id"] != second["result"]["memory_id"]


async def test_chosen_memories_are_summarized_in_conversation_order(client, scope):
    ids = await ingest(client, TRIP[:5], user_id=scope, run_id=f"{scope}-a")
    ids += await ingest(client, TRIP[5:], user_id=scope, run_id=f"{scope}-b")
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    job = await summarize(client, {"memory_ids": shuffled + shuffled[:2], "mode": "extractive"})
    done = await finish(client, job["id"])
    assert done["status"] == "succeeded", done
    summary = (await client.get(f"/api/v1/memories/{done['result']['memory_id']}")).json()
    assert summary["metadata"]["source_ids"] == ids  # created order, duplicates once
    # The sources share the user but not the run: the summary takes the shared scope only.
    assert (summary["user_id"], summary["run_id"]) == (scope, None)


async def test_a_long_conversation_is_map_reduced_with_a_progress_event_per_chunk(client, scope, db):
    run = f"{scope}-run"
    places = ["Lisbon", "Porto", "Sintra", "Coimbra", "Faro", "Braga"]
    turns = [f"Turn {n}: for the {places[n % 6]} leg we compared {n % 4 + 2} hotels and picked the one with a "
             f"{['river', 'garden', 'castle', 'harbour'][n % 4]} view. The booking for night {n} is confirmed, and "
             f"breakfast is included at the {places[(n + 1) % 6]} station café." for n in range(130)]
    ids = await ingest(client, turns, user_id=scope, run_id=run)
    job = await summarize(client, {"run_id": run, "mode": "extractive", "max_sentences": 5})
    events = await follow(client, job["id"], last_event_id="0-0", timeout=180)
    assert events[-1].event == "succeeded", [(e.event, e.data) for e in events]
    result = events[-1].data["data"]["result"]
    chunks = result["chunks"]
    # ~23,000 characters in chunks of at most 6,000 (AGENTMEM_SUMMARY_CHUNK_CHARS's default).
    assert sum(len(t) for t in turns) > 23_000 and chunks >= 4, result
    progress = [e.data["data"] for e in events if e.event == "progress"]
    assert [(p["done"], p["total"], p["message"]) for p in progress if p["message"].startswith("summarized")] == [
        (n, chunks + 1, f"summarized chunk {n} of {chunks}") for n in range(1, chunks + 1)]
    assert result["sources"] == 130 and result["chars_out"] <= 1000

    summary = (await client.get(f"/api/v1/memories/{result['memory_id']}")).json()
    assert summary["metadata"]["source_count"] == 130 and summary["metadata"]["run_id"] == run
    assert "source_ids" not in summary["metadata"]  # 130 ids are too many to list
    assert 1 <= len(summary["content"].split("\n")) <= 5 and len(summary["content"]) == result["chars_out"]
    positions = [turn_of(line, turns) for line in summary["content"].split("\n")]
    assert positions == sorted(positions)
    assert await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job["id"]) == [(1,)]
    assert len(ids) == 130



async def test_abstractive_summary_is_what_the_model_wrote_and_its_usage_is_recorded(llm_tenant, stack, scope, db):
    marker = f"marker-{uuid.uuid4().hex}"
    written = f"Alice and her sibling plan a June trip to Lisbon: flights, a riverside hotel, Sintra. {marker}"
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as model:
        scripted = await model.post("/scripts", json={"marker": marker, "responses": [{"content": written}]})
        assert scripted.status_code == 200, scripted.text
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(Role.MEMBER),
                                 timeout=httpx.Timeout(30, read=120)) as member:
        run = f"{scope}-run"
        await ingest(member, [*TRIP[:3], f"User: remember the code word {marker}.", *TRIP[3:]],
                     user_id=scope, run_id=run)
        job = await summarize(member, {"run_id": run})  # auto: the organization has a provider
        done = await finish(member, job["id"])
        assert done["status"] == "succeeded", done
        assert done["result"]["method"] == "abstractive" and done["result"]["chunks"] == 1
        assert done["usage"]["calls"] == 1 and done["usage"]["prompt_tokens"] > sum(len(t.split()) for t in TRIP)
        assert done["usage"]["completion_tokens"] == len(written.split())
        summary = (await member.get(f"/api/v1/memories/{done['result']['memory_id']}")).json()
    assert summary["content"] == written
    assert summary["metadata"]["method"] == "abstractive" and len(summary["metadata"]["source_ids"]) == len(TRIP) + 1
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as model:
        [request] = (await model.get("/chat/requests", params={"contains": marker})).json()
    prompt = request["messages"][-1]["content"]
    assert all(turn in prompt for turn in TRIP) and prompt.index(TRIP[0]) < prompt.index(TRIP[-1])
    assert request["model"] == "test-chat" and request["max_tokens"] > 0


async def test_a_long_conversation_is_summarized_per_chunk_then_merged_by_the_model(llm_tenant, stack, scope):
    marker = f"marker-{uuid.uuid4().hex}"
    turns = [f"User: on leg {n} of the tour ({marker}) we " + "talked about trains, hotels and museums " * 24
             for n in range(20)]  # ~1,000 characters each: 5 turns to a 6,000-character chunk
    chunks = len(chunk_by_chars([len(t) for t in turns], 6000, separator=2))
    partials = [f"Partial summary {k} ({marker})." for k in range(chunks)]
    final = f"The tour's {len(turns)} legs were planned: trains, hotels, museums."
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as model:
        # Every map prompt carries the marker, and so does the merge (the partials name it): the
        # merge comes after every map call, so it takes the last answer.
        response = await model.post("/scripts", json={"marker": marker, "responses": [
            *({"content": p} for p in partials), {"content": final}]})
        assert response.status_code == 200, response.text
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as owner:
        await ingest(owner, turns, run_id=scope)
        job = await summarize(owner, {"run_id": scope, "mode": "abstractive"})
        events = await follow(owner, job["id"], last_event_id="0-0")
        done = (await owner.get(f"/api/v1/jobs/{job['id']}")).json()
        summary = (await owner.get(f"/api/v1/memories/{done['result']['memory_id']}")).json()
    assert done["status"] == "succeeded", done
    assert chunks == 4 and done["result"]["chunks"] == chunks and done["result"]["llm_calls"] == chunks + 1
    assert done["usage"]["calls"] == chunks + 1 and summary["content"] == final
    progress = [e.data["data"]["message"] for e in events if e.event == "progress"]
    assert progress == [f"summarized chunk {n} of {chunks}" for n in range(1, chunks + 1)]
    async with httpx.AsyncClient(base_url=stack.model_url, timeout=30) as model:
        requests = (await model.get("/chat/requests", params={"contains": marker})).json()
    prompts = [r["messages"][-1]["content"] for r in requests]
    maps = sorted(p for p in prompts if "<conversation>" in p)
    assert [f"part {k} of {chunks}" in p for k, p in enumerate(maps, start=1)] == [True] * chunks
    assert all(sum(f"leg {n} " in p for p in maps) == 1 for n in range(len(turns)))  # each turn in one chunk
    [merge] = [p for p in prompts if "<summaries>" in p]
    assert all(p in merge for p in partials)


async def test_abstractive_without_a_provider_is_422_and_creates_no_job(tenant, stack, scope, db):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as owner:
        await ingest(owner, TRIP[:2], run_id=scope)
        response = await owner.post("/api/v1/summaries", json={"run_id": scope, "mode": "abstractive"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "llm_not_configured"
    assert await summary_jobs(db, tenant.org_id) == 0


async def test_another_organizations_memories_are_404_naming_them_and_create_no_job(tenant, other_tenant, stack,
                                                                                    scope, db):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as a:
        theirs = await ingest(a, TRIP[:2], run_id=scope)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as b:
        mine = await ingest(b, TRIP[2:3], run_id=scope)
        response = await b.post("/api/v1/summaries", json={"memory_ids": [*mine, *theirs], "mode": "extractive"})
        run = await b.post("/api/v1/summaries", json={"run_id": f"{scope}-nothing-here"})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "not_found" and error["details"]["missing_ids"] == theirs
    assert all(i in error["message"] for i in theirs) and mine[0] not in error["message"]
    assert run.status_code == 422 and run.json()["error"]["code"] == "nothing_to_summarize", run.text
    assert await summary_jobs(db, other_tenant.org_id) == 0


async def test_a_viewer_may_not_summarize(tenant, stack, scope, db):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(Role.VIEWER), timeout=30) as viewer:
        response = await viewer.post("/api/v1/summaries", json={"run_id": scope})
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied", response.text
    assert await summary_jobs(db, tenant.org_id) == 0


async def test_the_same_idempotency_key_gives_the_same_job(client, scope):
    await ingest(client, TRIP[:3], run_id=scope)
    key = f"summary-{uuid.uuid4().hex}"
    first = await summarize(client, {"run_id": scope, "mode": "extractive"}, **{"Idempotency-Key": key})
    again = await summarize(client, {"run_id": scope, "mode": "extractive"}, **{"Idempotency-Key": key})
    assert again["id"] == first["id"]
    other = await client.post("/api/v1/summaries", json={"run_id": scope, "mode": "auto"},
                              headers={"Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert (await finish(client, first["id"]))["status"] == "succeeded"


async def test_a_redelivered_summary_job_stores_one_memory(client, main_tenant, scope, monkeypatch, db):
    # The handler run twice on one claimed job, as after a worker died between storing and finishing.
    ids = await ingest(client, TRIP, user_id=scope, run_id=scope)

    class Embedder:
        async def embed(self, texts: list[str]) -> list[list[float]]:
            return [[1.0] + [0.0] * 383 for _ in texts]

    monkeypatch.setattr(summarization, "get_embedder", lambda: Embedder())
    payload = summarization.summary_payload(SummaryCreate(memory_ids=ids, mode="extractive"))
    async with session_scope() as session:
        job, _ = await jobs.submit(session, org_id=main_tenant.org_id, kind=JobKind.SUMMARIZE, payload=payload,
                                   total=1, idempotency_key=None, request_id=None, max_attempts=3)
        await session.commit()
        job = await jobs.claim(session, job.id, 60, "test")
        await session.commit()
    try:
        first = await summarization.summarize(JobContext(job))
        second = await summarization.summarize(JobContext(job))
    finally:
        async with session_scope() as session:
            await jobs.finish_recorded(session, job.id, JobStatus.SUCCEEDED, result={})
            await session.commit()
    assert second["memory_id"] == first["memory_id"] and second.get("stored_before") is True
    assert (second["method"], second["sources"], second["chars_out"]) == (
        first["method"], first["sources"], first["chars_out"])
    assert await db("SELECT count(*) FROM memories WHERE source_job_id = :j", j=job.id) == [(1,)]


async def test_a_summary_for_an_organization_at_its_memory_quota_is_403_and_creates_no_job(tenant, stack, scope, db):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=tenant.headers(), timeout=30) as owner:
        await ingest(owner, TRIP[:2], run_id=scope)
        await db("UPDATE organizations SET limits = CAST(:l AS jsonb) WHERE id = :o", l='{"max_memories": 2}',
                 o=tenant.org_id)
        response = await owner.post("/api/v1/summaries", json={"run_id": scope, "mode": "extractive"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "quota_max_memories", response.text
    assert await summary_jobs(db, tenant.org_id) == 0
