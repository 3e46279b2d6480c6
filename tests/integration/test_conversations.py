"""Conversations and agent turns against the real stack: API, workers, PostgreSQL, Valkey, and the tests'
OpenAI-compatible server answering as scripted (its default answer is `echo: <last user message>`)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from schemas.permissions import Role
from tests.support.sse import TERMINAL, finish, follow, read_sse


@pytest.fixture
async def chat(stack, llm_tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as client:
        yield client


def marker() -> str:
    return f"zq{uuid.uuid4().hex[:10]}"


async def script(stack, mark: str, responses: list[dict]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": responses})
        response.raise_for_status()


async def chat_requests(stack, mark: str) -> list[dict]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{stack.model_url}/chat/requests", params={"contains": mark})).json()


async def new_agent(chat, **fields) -> dict:
    response = await chat.post("/api/v1/agents", json={"name": f"agent-{uuid.uuid4().hex[:8]}",
                                                       "system": "You are a helpful test agent.", **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def new_conversation(chat, agent_id: str, **fields) -> dict:
    response = await chat.post(f"/api/v1/agents/{agent_id}/conversations", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


async def say(chat, conversation_id: str, content: str, **fields) -> dict:
    response = await chat.post(f"/api/v1/conversations/{conversation_id}/messages",
                               json={"content": content, **fields})
    assert response.status_code == 202, response.text
    return response.json()


async def messages_of(chat, conversation_id: str) -> list[dict]:
    response = await chat.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def turn(chat, conversation_id: str, content: str, **fields) -> tuple[dict, list]:
    posted = await say(chat, conversation_id, content, **fields)
    # From the stream's start: a quick turn may have published its first steps before we connect.
    events = await follow(chat, posted["job"]["id"], last_event_id="0-0")
    job = (await chat.get(f"/api/v1/jobs/{posted['job']['id']}")).json()
    return job, events


async def test_a_reply_streams_token_by_token_from_the_post_and_is_stored(chat):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"], user_id="streamer")
    text = "please repeat these seven words back to me"
    events = []
    async with chat.stream("POST", f"/api/v1/conversations/{conversation['id']}/messages?stream=true",
                           json={"content": text}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        job_id = response.headers["x-job-id"]
        async for event in read_sse(response):
            events.append(event)
            if event.event in TERMINAL:
                break
    kinds = [e.event for e in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "succeeded", kinds
    tokens = [e.data["data"]["text"] for e in events if e.event == "token"]
    assert len(tokens) >= 2, kinds  # delivered as it was written, not in one piece
    result = events[-1].data["data"]["result"]
    assert "".join(tokens) == result["content"] == f"echo: {text}"
    assert result["stop_reason"] == "final" and result["steps"] == 1
    assert result["usage"]["completion_tokens"] > 0 and result["usage"]["calls"] == 1
    stored = await messages_of(chat, conversation["id"])
    assert [(m["seq"], m["role"]) for m in stored] == [(1, "user"), (2, "assistant")]
    assert stored[1]["content"] == result["content"] and stored[1]["job_id"] == job_id
    assert any(e.event == "message" and e.data["data"]["message"]["seq"] == 2 for e in events)
    job = (await chat.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["kind"] == "agent_turn" and job["usage"]["calls"] == 1


@pytest.mark.parametrize("ids", ["first", "every", "none"])
async def test_a_tool_call_split_across_chunks_is_assembled_and_writes_a_block_version(chat, stack, ids):
    block = (await chat.post("/api/v1/blocks", json={"label": "human", "value": "Name: Ada.",
                                                     "limit": 2000})).json()
    agent = await new_agent(chat, block_ids=[block["id"]])
    conversation = await new_conversation(chat, agent["id"])
    mark = marker()
    fact = "Ada prefers window seats on long flights, and she is allergic to peanuts; remember both of these."
    await script(stack, mark, [{"tool_calls": [{"name": "core_memory_append",
                                                "arguments": {"label": "human", "content": fact}}],
                                "tool_call_ids": ids},
                               {"content": "Noted."}])
    job, events = await turn(chat, conversation["id"], f"{mark} remember my preferences")
    assert job["status"] == "succeeded", job
    [call] = [e.data["data"] for e in events if e.event == "tool_call"]
    assert call["name"] == "core_memory_append" and json.loads(call["arguments"]) == {"label": "human",
                                                                                     "content": fact}
    [result] = [e.data["data"] for e in events if e.event == "tool_result"]
    assert result["ok"] is True and result["tool_call_id"] == call["id"] and call["id"]
    after = (await chat.get(f"/api/v1/blocks/{block['id']}")).json()
    assert after["version"] == 2 and after["value"] == f"Name: Ada.\n{fact}"
    roles = [(m["role"], m.get("tool_call_id")) for m in await messages_of(chat, conversation["id"])]
    assert roles == [("user", None), ("assistant", None), ("tool", call["id"]), ("assistant", None)]
    # The second model call saw the tool's result after the call, as OpenAI requires.
    second = (await chat_requests(stack, mark))[-1]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == call["id"] and second[-1]["role"] == "tool"
    assert job["result"]["content"] == "Noted." and job["result"]["tool_calls"] == 1


async def test_each_usage_event_times_the_stages_since_the_one_before(chat, stack):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"], user_id=f"timed-{uuid.uuid4().hex[:6]}")
    mark = marker()
    await script(stack, mark, [{"tool_calls": [{"name": "memory_search", "arguments": {"query": "the cat"}}]},
                               {"content": "Nothing found."}])
    job, events = await turn(chat, conversation["id"], f"{mark} what is my cat called?")
    assert job["status"] == "succeeded", job
    first, second = [e.data["data"]["timings"] for e in events if e.event == "usage"]
    # The first call: the turn's setup with its recall (a search with the vector the API stored when the
    # message was posted: nothing embedded), then the prompt and a model answer that is a tool call only (no
    # text, so no first token).
    assert {"setup", "recall", "vector", "checkpoint", "context", "llm"} <= set(first), first
    assert "embed" not in first and "llm_first_token" not in first and first["recall"] <= first["setup"]
    # The second: the checkpoint before the tool, its search, the prompt again and a text answer; the setup
    # is not counted again.
    assert {"checkpoint_tools", "embed", "checkpoint", "context", "llm_first_token", "llm"} <= set(second), second
    assert "setup" not in second and second["llm_first_token"] <= second["llm"]
    assert all(isinstance(ms, float) and ms >= 0 for ms in [*first.values(), *second.values()])


async def test_two_parallel_tool_calls_both_run_and_are_answered(chat, stack):
    agent = await new_agent(chat)
    user = f"parallel-{uuid.uuid4().hex[:6]}"
    conversation = await new_conversation(chat, agent["id"], user_id=user)
    mark = marker()
    await script(stack, mark, [{"tool_calls": [
        {"name": "memory_insert", "arguments": {"content": "The user's cat is called Miso."}},
        {"name": "memory_insert", "arguments": {"content": "The user lives in Lisbon."}}]},
        {"content": "Both saved."}])
    job, events = await turn(chat, conversation["id"], f"{mark} my cat is Miso and I live in Lisbon")
    assert job["status"] == "succeeded", job
    results = [e.data["data"] for e in events if e.event == "tool_result"]
    assert len(results) == 2 and all(r["ok"] for r in results)
    memories = (await chat.get("/api/v1/memories", params={"user_id": user})).json()["items"]
    assert sorted(m["content"] for m in memories) == ["The user lives in Lisbon.", "The user's cat is called Miso."]
    assert all(m["agent_id"] == agent["id"] for m in memories)
    tool_messages = [m for m in await messages_of(chat, conversation["id"]) if m["role"] == "tool"]
    assert {m["tool_call_id"] for m in tool_messages} == {r["tool_call_id"] for r in results}


async def test_the_step_limit_ends_a_turn_that_keeps_calling_tools(chat, stack):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    mark = marker()
    loop = {"tool_calls": [{"name": "memory_search", "arguments": {"query": "anything"}}]}
    await script(stack, mark, [loop, loop, loop])
    job, _ = await turn(chat, conversation["id"], f"{mark} search forever", max_steps=2)
    assert job["status"] == "succeeded", job
    assert job["result"]["stop_reason"] == "max_steps" and job["result"]["steps"] == 2
    stored = await messages_of(chat, conversation["id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "tool"]
    assert "step limit" in stored[-1]["content"]
    assert len(await chat_requests(stack, mark)) == 2


async def test_an_llm_429_is_retried_and_the_turn_succeeds(chat, stack):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    mark = marker()
    await script(stack, mark, [{"status": 429, "retry_after": 0}, {"content": "after the wait"}])
    job, _ = await turn(chat, conversation["id"], f"{mark} hello")
    assert job["status"] == "succeeded", job
    assert job["result"]["content"] == "after the wait"
    assert len(await chat_requests(stack, mark)) == 2
    assert [m["role"] for m in await messages_of(chat, conversation["id"])] == ["user", "assistant"]


async def test_cancel_mid_stream_keeps_the_partial_answer_and_stops(chat, stack):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    mark = marker()
    long_answer = " ".join(f"word{i}" for i in range(60))
    await script(stack, mark, [{"content": long_answer, "chunk_delay": 0.1}])
    posted = await say(chat, conversation["id"], f"{mark} talk for a while")
    job_id = posted["job"]["id"]
    await follow(chat, job_id, stop_after=lambda e: e.event == "token")
    response = await chat.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    job = await finish(chat, job_id)
    assert job["status"] == "cancelled", job
    stored = await messages_of(chat, conversation["id"])
    assert stored[-1]["role"] == "assistant"
    assert 0 < len(stored[-1]["content"]) < len(long_answer) and long_answer.startswith(stored[-1]["content"])


async def test_a_dropped_stream_resumes_with_last_event_id_and_misses_nothing(chat, stack):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    mark = marker()
    answer = " ".join(f"part{i}" for i in range(20))
    await script(stack, mark, [{"content": answer, "chunk_delay": 0.05}])
    first: list = []
    async with chat.stream("POST", f"/api/v1/conversations/{conversation['id']}/messages",
                           json={"content": f"{mark} go"}, headers={"Accept": "text/event-stream"}) as response:
        job_id = response.headers["x-job-id"]
        async for event in read_sse(response):
            first.append(event)
            if sum(e.event == "token" for e in first) == 2:
                break  # the client drops here
    rest = await follow(chat, job_id, last_event_id=first[-1].id)
    tokens = [e.data["data"]["text"] for e in first + rest if e.event == "token"]
    assert "".join(tokens) == answer
    assert rest[-1].event == "succeeded"


async def test_memories_of_the_user_are_recalled_into_the_prompt_and_context_shows_them(chat, stack):
    user = f"recall-{uuid.uuid4().hex[:6]}"
    stored = await chat.post("/api/v1/memories", json={"items": [
        {"content": "The user's favourite food is spicy ramen."},
        {"content": "The user works as a marine biologist."}], "user_id": user})
    assert (await finish(chat, stored.json()["id"]))["status"] == "succeeded"
    other = await chat.post("/api/v1/memories", json={
        "items": [{"content": "Another user's favourite food is plain toast."}], "user_id": "someone-else"})
    await finish(chat, other.json()["id"])
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"], user_id=user)
    mark = marker()
    job, _ = await turn(chat, conversation["id"], f"{mark} what food should I cook tonight?")
    assert job["status"] == "succeeded", job
    system = (await chat_requests(stack, mark))[0]["messages"][0]["content"]
    assert "spicy ramen" in system and "plain toast" not in system
    context = (await chat.get(f"/api/v1/agents/{agent['id']}/context",
                              params={"conversation_id": conversation["id"], "query": "what should I eat"})).json()
    assert context["memories"][0]["content"] == "The user's favourite food is spicy ramen."
    assert context["memories"][0]["score"] > 0
    assert [m["role"] for m in context["messages"]] == ["user", "assistant"]
    assert context["tokens"]["total"] <= context["tokens"]["budget"]
    assert context["model"] == "test-chat" and "spicy ramen" in context["system"]


async def test_the_user_message_is_embedded_when_posted_and_its_turn_recalls_with_that_vector(chat, stack, db):
    user = f"vec-{uuid.uuid4().hex[:6]}"
    stored = await chat.post("/api/v1/memories", json={"items": [
        {"content": "The user keeps bees on the roof of their flat."},
        {"content": "The user drives a red hatchback to work."}], "user_id": user})
    assert (await finish(chat, stored.json()["id"]))["status"] == "succeeded"
    agent = await new_agent(chat, memory_top_k=1)
    conversation = await new_conversation(chat, agent["id"], user_id=user)
    mark = marker()
    await script(stack, mark, [{"delay": 1.5, "content": "Honey, probably."}])  # the turn is still running
    posted = await say(chat, conversation["id"], f"{mark} what do my insects make?")
    [(embedded, status)] = await db("SELECT m.embedding IS NOT NULL, j.status FROM messages m JOIN jobs j "
                                    "ON j.id = m.job_id WHERE m.id = :id", id=posted["message"]["id"])
    assert embedded and status in ("queued", "running")  # by the API, before any worker saw the turn
    await follow(chat, posted["job"]["id"])
    system = (await chat_requests(stack, mark))[0]["messages"][0]["content"]
    assert "keeps bees" in system and "hatchback" not in system  # no shared word: found by the posted vector


async def test_long_history_is_summarized_never_silently_cut(chat, stack):
    agent = await new_agent(chat, llm={"context_window": 1024, "max_tokens": 256})
    conversation = await new_conversation(chat, agent["id"])
    for i in range(24):
        role = "user" if i % 2 == 0 else "assistant"
        response = await chat.post(f"/api/v1/conversations/{conversation['id']}/messages", json={
            "role": role, "content": f"Message {i} talks about topic number {i} at some length, so that the "
                                     f"history outgrows a small context window quickly.", "respond": False})
        assert response.status_code == 201, response.text
    job, _ = await turn(chat, conversation["id"], "and what did we say about topic number 3?")
    assert job["status"] == "succeeded", job
    context = (await chat.get(f"/api/v1/agents/{agent['id']}/context",
                              params={"conversation_id": conversation["id"]})).json()
    assert context["omitted_messages"] > 0
    # What the window leaves out is in the summary section: summarized, or condensed until the job catches up.
    assert "topic number 0" in context["system"] or "topic number 1" in context["system"]
    # The organization is the test's own: its summary jobs are this conversation's.
    mine = (await chat.get("/api/v1/jobs", params={"kind": "summarize_conversation"})).json()["items"]
    assert mine, "a rolling summary job was queued"
    done = await finish(chat, mine[0]["id"])
    assert done["status"] == "succeeded", done
    after = (await chat.get(f"/api/v1/conversations/{conversation['id']}")).json()
    assert after["summary_upto"] > 0 and after["summary"]


async def test_turns_feed_memory_when_the_agent_asks_for_it(chat):
    agent = await new_agent(chat, memory_extraction="turns")
    user = f"turns-{uuid.uuid4().hex[:6]}"
    conversation = await new_conversation(chat, agent["id"], user_id=user)
    job, _ = await turn(chat, conversation["id"], "I just adopted a greyhound called Pixel")
    assert job["status"] == "succeeded", job
    [ingest] = (await chat.get("/api/v1/jobs", params={"kind": "ingest_memories"})).json()["items"]
    assert (await finish(chat, ingest["id"]))["status"] == "succeeded"
    memories = (await chat.get("/api/v1/memories", params={"user_id": user})).json()["items"]
    assert {m["content"] for m in memories} == {"I just adopted a greyhound called Pixel",
                                                 "echo: I just adopted a greyhound called Pixel"}


async def test_bad_messages_are_refused_and_store_nothing(chat):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    path = f"/api/v1/conversations/{conversation['id']}/messages"
    for body in ({"content": ""}, {"content": "   "}, {"role": "tool", "content": "42"},
                 {"role": "user", "content": "hi", "tool_call_id": "call_1"}, {"role": "robot", "content": "x"},
                 {"content": "x", "max_steps": 0}):
        response = await chat.post(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"]
    response = await chat.post(path, json={"role": "tool", "content": "42", "tool_call_id": "call_never_made"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "tool_call_unknown"
    response = await chat.post(f"/api/v1/agents/{uuid.uuid4()}/conversations", json={})
    assert response.status_code == 404
    response = await chat.post(f"/api/v1/conversations/{uuid.uuid4()}/messages", json={"content": "hello"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "conversation_not_found"
    assert await messages_of(chat, conversation["id"]) == []
    assert (await chat.get(f"/api/v1/conversations/{conversation['id']}")).json()["message_count"] == 0


async def test_a_second_message_while_a_turn_runs_is_409_busy(chat, stack):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    mark = marker()
    await script(stack, mark, [{"content": "slow answer", "delay": 2}])
    posted = await say(chat, conversation["id"], f"{mark} first")
    response = await chat.post(f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "second"})
    assert response.status_code == 409 and response.json()["error"]["code"] == "conversation_busy"
    assert response.json()["error"]["details"]["job_id"] == posted["job"]["id"]
    assert (await finish(chat, posted["job"]["id"]))["status"] == "succeeded"
    assert [m["content"] for m in await messages_of(chat, conversation["id"])] == [f"{mark} first", "slow answer"]


async def test_the_same_idempotency_key_gives_the_same_message_and_turn(chat):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    path = f"/api/v1/conversations/{conversation['id']}/messages"
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = await chat.post(path, json={"content": "once"}, headers=key)
    again = await chat.post(path, json={"content": "once"}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["message"]["id"] == again.json()["message"]["id"]
    assert first.json()["job"]["id"] == again.json()["job"]["id"]
    other = await chat.post(path, json={"content": "different"}, headers=key)
    assert other.status_code == 409
    await finish(chat, first.json()["job"]["id"])
    assert [m["role"] for m in await messages_of(chat, conversation["id"])] == ["user", "assistant"]


async def test_conversations_are_invisible_to_other_organizations_and_viewers_cannot_post(chat, stack, other_tenant,
                                                                                          llm_tenant):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as stranger:
        for method, path, body in (
                ("GET", f"/api/v1/conversations/{conversation['id']}", None),
                ("GET", f"/api/v1/conversations/{conversation['id']}/messages", None),
                ("POST", f"/api/v1/conversations/{conversation['id']}/messages", {"content": "hi"}),
                ("PATCH", f"/api/v1/conversations/{conversation['id']}", {"title": "mine now"}),
                ("DELETE", f"/api/v1/conversations/{conversation['id']}", None),
                ("GET", f"/api/v1/agents/{agent['id']}/conversations", None),
                ("POST", f"/api/v1/agents/{agent['id']}/conversations", {}),
                ("GET", f"/api/v1/agents/{agent['id']}/context", None)):
            response = await stranger.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(Role.VIEWER),
                                 timeout=30) as viewer:
        response = await viewer.post(f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "hi"})
        assert response.status_code == 403
        assert (await viewer.get(f"/api/v1/conversations/{conversation['id']}/messages")).status_code == 200
    assert await messages_of(chat, conversation["id"]) == []


async def test_deleting_a_conversation_is_soft_and_audited(chat):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"], title="to delete")
    await turn(chat, conversation["id"], "hello there")
    response = await chat.delete(f"/api/v1/conversations/{conversation['id']}")
    assert response.status_code == 204
    assert (await chat.get(f"/api/v1/conversations/{conversation['id']}")).status_code == 404
    listed = (await chat.get(f"/api/v1/agents/{agent['id']}/conversations")).json()["items"]
    assert conversation["id"] not in {c["id"] for c in listed}
    audit = (await chat.get("/api/v1/audit-logs", params={"target_id": conversation["id"]})).json()["items"]
    assert any(a["action"] == "delete_conversation" and a["result"] == "success" for a in audit), audit


async def test_messages_page_in_order_with_a_cursor(chat):
    agent = await new_agent(chat)
    conversation = await new_conversation(chat, agent["id"])
    for i in range(5):
        await chat.post(f"/api/v1/conversations/{conversation['id']}/messages",
                        json={"content": f"note {i}", "respond": False})
    first = (await chat.get(f"/api/v1/conversations/{conversation['id']}/messages", params={"limit": 2})).json()
    second = (await chat.get(f"/api/v1/conversations/{conversation['id']}/messages",
                             params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [m["seq"] for m in first["items"] + second["items"]] == [1, 2, 3, 4]
    newest = (await chat.get(f"/api/v1/conversations/{conversation['id']}/messages",
                             params={"order": "desc", "limit": 1})).json()
    assert newest["items"][0]["content"] == "note 4"


async def test_parallel_conversations_each_get_their_own_answer(chat):
    agent = await new_agent(chat)
    conversations = [await new_conversation(chat, agent["id"], user_id=f"p{i}") for i in range(4)]
    results = await asyncio.gather(*[turn(chat, c["id"], f"hello from {i}") for i, c in enumerate(conversations)])
    for i, (job, _) in enumerate(results):
        assert job["status"] == "succeeded" and job["result"]["content"] == f"echo: hello from {i}"
