"""The Python SDK (agentmem/) against the real stack: sync and async clients, jobs waited on and followed across a
cut connection, errors as the API sends them, pages, an agent turn streamed; and the CLI on top of it."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from agentmem import (
    AgentMem,
    AsyncAgentMem,
    BadRequestError,
    JobFailed,
    NotFoundError,
    PermissionDeniedError,
)
from core.events import job_stream
from core.redis import get_redis
from schemas.permissions import Role
from tests.support.proxy import CuttingProxy


def slow_items(n: int, seconds: float) -> list[str]:
    """Memories the tests' embedding server takes `seconds` each to embed: a job that runs a while."""
    return [f"streamed item {i} @@slow:{seconds}@@" for i in range(n)]


FACTS = ["Ada keeps bees on the roof of her flat in Lisbon.", "Ada's sister Grace plays the cello.",
         "Ada is allergic to peanuts.", "Ada drives a green 1972 Citroën DS.", "Ada's favourite tea is lapsang."]


def test_sync_client_adds_waits_searches_and_pages(stack, tenant, scope):
    with AgentMem(stack.api_url, tenant.keys[Role.OWNER]) as client:
        job = client.memories.add(FACTS, user_id=scope)
        assert job.status == "queued" and job.kind == "ingest_memories"
        assert job.wait(timeout=120) is job
        assert job.status == "succeeded" and job.progress.done == len(FACTS)

        found = client.memories.search("who has an apiary?", user_id=scope, top_k=1)
        assert found.hits[0].memory.content == FACTS[0]

        # Five memories, two a page: the iterator crosses three pages and yields each memory once.
        listed = [m.content for m in client.memories.list(user_id=scope, page_size=2)]
        assert sorted(listed) == sorted(FACTS) and len(listed) == 5
        assert [j.id for j in client.jobs.list(kind="ingest_memories", page_size=1)][:1] == [job.id]


async def test_async_client_adds_waits_searches_and_pages(stack, tenant, scope):
    async with AsyncAgentMem(stack.api_url, tenant.keys[Role.OWNER]) as client:
        job = await client.memories.add(FACTS, user_id=scope)
        await job.wait(timeout=120)
        assert job.status == "succeeded"
        found = await client.memories.search("which instrument does the sister play?", user_id=scope, top_k=1)
        assert found.hits[0].memory.content == FACTS[1]
        listed = [m.content async for m in client.memories.list(user_id=scope, page_size=2)]
        assert sorted(listed) == sorted(FACTS)
        memory_id = found.hits[0].memory.id
        memory, reembed = await client.memories.update(memory_id, content="Ada's sister Grace plays the viola.")
        assert memory.embedding_status == "pending"
        await reembed.wait(timeout=120)
        assert (await client.memories.get(memory_id)).embedding_status == "ready"
        history = [h.event async for h in client.memories.history(memory_id, page_size=1)]
        assert history == ["ADD", "UPDATE"]


async def test_events_resume_after_a_cut_connection_losing_and_repeating_nothing(stack, tenant, scope):
    port = httpx.URL(stack.api_url).port
    proxy = CuttingProxy("127.0.0.1", port)
    try:
        async with AsyncAgentMem(proxy.url, tenant.keys[Role.OWNER]) as client:
            # Five chunks of eight (the stack's AGENTMEM_INGEST_CHUNK_SIZE), each a progress event.
            job = await client.memories.add(slow_items(40, 0.1), user_id=scope)
            seen = []
            async for event in job.events(timeout=120):
                seen.append(event)
                if event.id and not event.type.terminal and proxy.cuts == 0:
                    proxy.cut()   # mid-stream, right after an event with an id
            assert job.status == "succeeded"
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert [e.type.value for e in seen].count("snapshot") == 1 and seen[-1].type.value == "succeeded"
    received = [e.id for e in seen if e.id]
    stored = [entry_id for entry_id, _ in await get_redis().xrange(job_stream(job.id))]
    # The follow began at "now" (the events before it are in the snapshot); from there, every stored event
    # arrives exactly once and in order across the reconnection.
    assert received == stored[stored.index(received[0]):]
    # The reconnection asked for what follows the last event read before the cut (bytes already received
    # when the connection dropped are still read), and events came after it.
    [resumed] = [value for value in proxy.sent("Last-Event-ID") if value]
    assert resumed in received[:-1]


def test_errors_carry_the_apis_code_message_details_and_request_id(stack, tenant):
    with AgentMem(stack.api_url, tenant.keys[Role.VIEWER]) as viewer:
        with pytest.raises(PermissionDeniedError) as denied:
            viewer.memories.add(["a viewer can't write"])
        with pytest.raises(NotFoundError) as missing:
            viewer.memories.get(uuid.uuid4())
        with pytest.raises(BadRequestError) as invalid:
            viewer.memories.search("")
    assert denied.value.status_code == 403 and denied.value.code == "permission_denied"
    assert missing.value.status_code == 404 and missing.value.message
    assert invalid.value.code == "invalid_input" and invalid.value.details["errors"][0]["loc"] == ["body", "query"]
    for exc in (denied.value, missing.value, invalid.value):
        assert exc.request_id and exc.request_id == exc.headers["X-Request-ID"]


def test_a_cancelled_job_makes_wait_raise_unless_asked_not_to(stack, tenant, scope):
    with AgentMem(stack.api_url, tenant.keys[Role.OWNER]) as client:
        job = client.memories.add(slow_items(40, 0.5), user_id=scope)
        job.cancel()
        assert job.data.cancel_requested or job.status == "cancelled"
        with pytest.raises(JobFailed) as raised:
            job.wait(timeout=120)
        assert raised.value.job.status == "cancelled"
        assert client.jobs.get(job.id).wait(timeout=10, check=False).status == "cancelled"
        # Whatever it stored before the checkpoint is listed by the job that stored it, as its result counts.
        kept = list(client.memories.list(source_job_id=job.id, page_size=10))
        assert len(kept) == ((job.result or {}).get("kept") or 0)


@pytest.fixture
def model_script(stack):
    def script(mark: str, responses: list[dict]) -> None:
        httpx.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": responses}).raise_for_status()

    return script


def test_a_chat_streams_tokens_and_tool_events_and_the_conversation_goes_on(stack, llm_tenant, model_script):
    mark = f"zq{uuid.uuid4().hex[:10]}"
    answer = "Bees, mostly, and a cello on Sundays."
    model_script(mark, [{"tool_calls": [{"name": "memory_search", "arguments": {"query": "hobbies"}}]},
                        {"content": answer, "chunk_delay": 0.06}])
    with AgentMem(stack.api_url, llm_tenant.keys[Role.OWNER]) as client:
        agent = client.agents.create(f"sdk-{uuid.uuid4().hex[:8]}", system="You are a test agent.")
        stream = client.agents.chat(agent.id, f"{mark} what are my hobbies?", user_id="ada", stream=True)
        kinds = [event.type.value for event in stream]
        assert kinds[0] == "snapshot" and kinds[-1] == "succeeded"
        assert "tool_call" in kinds and "tool_result" in kinds and kinds.count("token") >= 2
        assert stream.text == answer and stream.result["content"] == answer
        assert stream.conversation_id and stream.job_id

        job = client.agents.chat(agent.id, "and thanks", conversation_id=stream.conversation_id)
        assert str(job.conversation_id) == str(stream.conversation_id) and job.message.content == "and thanks"
        job.wait(timeout=120)
        roles = [m.role for m in client.conversations.messages(stream.conversation_id, page_size=2)]
        assert roles[0] == "user" and roles[-1] == "assistant" and roles.count("user") == 2


async def test_the_async_chat_streams_the_same_events(stack, llm_tenant, model_script):
    mark = f"zq{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(model_script, mark, [{"content": "Hello from the async side.", "chunk_delay": 0.06}])
    async with AsyncAgentMem(stack.api_url, llm_tenant.keys[Role.OWNER]) as client:
        agent = await client.agents.create(f"sdk-{uuid.uuid4().hex[:8]}")
        conversation = await client.conversations.create(agent.id, user_id="ada")
        stream = client.conversations.send(conversation.id, f"{mark} hi", stream=True)
        kinds = [event.type.value async for event in stream]
        assert kinds[-1] == "succeeded" and "token" in kinds
        assert stream.text == "Hello from the async side."


def test_the_cli_prints_each_job_id_and_speaks_json(stack, tenant, tmp_path):
    key = tenant.keys[Role.OWNER]
    common = ["--api-url", stack.api_url, "--api-key", key]
    jsonl = tmp_path / "memories.jsonl"
    jsonl.write_text("".join(json.dumps({"content": f"cli memory {i}", "user_id": "cli"}) + "\n" for i in range(5)))

    text = stack.run("ingest", str(jsonl), "--batch-size", "2", *common, timeout=120)
    assert text.returncode == 0, text.stderr
    queued = [line.split()[1] for line in text.stdout.splitlines() if line.startswith("job ") and "queued" in line]
    assert len(queued) == 3 and all(uuid.UUID(job_id) for job_id in queued)

    (tmp_path / "memories.jsonl.agentmem-state.json").unlink()
    as_json = stack.run("ingest", str(jsonl), "--batch-size", "2", "--wait", "--json", *common, timeout=180)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    # The same file and batches: the same Idempotency-Keys, so the same three jobs, now finished.
    assert [j["id"] for j in report["jobs"]] == queued and {j["status"] for j in report["jobs"]} == {"succeeded"}

    watched = stack.run("jobs", "watch", queued[0], "--json", *common)
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[0]["type"] == "snapshot" and events[-1]["type"] == "succeeded"

    shown = stack.run("jobs", "show", queued[1], "--json", *common)
    assert shown.returncode == 0 and json.loads(shown.stdout)["progress"] == {"done": 2, "total": 2, "message": None}
    missing = stack.run("jobs", "show", str(uuid.uuid4()), *common)
    assert missing.returncode == 2 and "404 not_found" in missing.stderr and "request " in missing.stderr



async def test_the_organization_stream_replays_after_a_position_and_carries_every_jobs_events(stack, tenant, scope):
    async with AsyncAgentMem(stack.api_url, tenant.keys[Role.OWNER]) as client:
        first = await (await client.memories.add(["an organization-wide event"], user_id=scope)).wait(timeout=120)
        second = await (await client.memories.add(["another one"], user_id=scope)).wait(timeout=120)
        seen: list = []
        # From the start of the (fresh) organization's stream; it never ends, so the caller stops it.
        stream = client.jobs.organization_events(last_event_id="0-0")
        async for event in stream:
            seen.append(event)
            if event.job_id == str(second.id) and event.type.terminal:
                break
        await stream.aclose()
    kinds = {job_id: [e.type.value for e in seen if e.job_id == job_id] for job_id in (str(first.id), str(second.id))}
    assert kinds[str(first.id)][-1] == "succeeded" and kinds[str(second.id)][-1] == "succeeded"
    assert len({e.id for e in seen}) == len(seen)
