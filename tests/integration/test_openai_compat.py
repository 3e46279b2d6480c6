"""The OpenAI-compatible door, driven by the real `openai` client against the real stack (API, workers,
PostgreSQL, Valkey, and the tests' model server, which answers `echo: <last user message>` unless scripted);
and talking to agents over the WebSocket (`send`)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import openai
import pytest
import websockets

from schemas.permissions import Role
from tests.support.routes import socket_exchange, socket_url


def marker() -> str:
    return f"zq{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rest(stack, llm_tenant):
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as client:
        yield client


@pytest.fixture
async def ai(stack, llm_tenant):
    async with openai.AsyncOpenAI(base_url=stack.api_url + "/v1", api_key=llm_tenant.keys[Role.OWNER],
                                  timeout=120) as client:
        yield client


async def new_agent(rest, **fields) -> dict:
    response = await rest.post("/api/v1/agents", json={"name": f"door-{uuid.uuid4().hex[:8]}",
                                                       "system": "You are a helpful test agent.", **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def script(stack, mark: str, responses: list[dict]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": responses})
        response.raise_for_status()


async def chat_requests(stack, mark: str) -> list[dict]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{stack.model_url}/chat/requests", params={"contains": mark})).json()


async def messages_of(rest, conversation_id: str) -> list[dict]:
    response = await rest.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def user_says(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_a_completion_is_the_agents_answer_with_usage_and_the_turn_named(ai, rest):
    agent = await new_agent(rest)
    text = f"{marker()} hello door"
    raw = await ai.chat.completions.with_raw_response.create(model=agent["id"], messages=user_says(text),
                                                             user="ada")
    completion = raw.parse()
    job_id, conversation_id = raw.headers["x-job-id"], raw.headers["x-conversation-id"]
    assert completion.object == "chat.completion" and completion.id == f"chatcmpl-{job_id}"
    assert completion.model == agent["id"]
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == f"echo: {text}"
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    usage = completion.usage
    assert usage.completion_tokens == 4 and usage.prompt_tokens > 0  # the answer's words
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    job = (await rest.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["kind"] == "agent_turn" and job["status"] == "succeeded"
    assert job["usage"]["completion_tokens"] == usage.completion_tokens
    conversation = (await rest.get(f"/api/v1/conversations/{conversation_id}")).json()
    assert conversation["agent_id"] == agent["id"] and conversation["user_id"] == "ada"
    stored = await messages_of(rest, conversation_id)
    assert [(m["role"], m["content"]) for m in stored] == [("user", text), ("assistant", f"echo: {text}")]
    [entry] = (await rest.get("/api/v1/audit-logs", params={"target_id": stored[0]["id"]})).json()["items"]
    assert (entry["action"], entry["target_type"], entry["result"]) == ("create_chat_completion", "message", "success")
    assert entry["details"] == {"conversation_id": conversation_id, "model": agent["id"], "stream": False,
                                "via": "openai"}


async def test_a_stream_writes_the_same_answer_chunk_by_chunk_and_ends_properly(ai, rest):
    agent = await new_agent(rest)
    text = f"{marker()} please say these seven words back"
    stream = await ai.chat.completions.create(model=agent["name"], messages=user_says(text), stream=True,
                                              stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    assert len(pieces) >= 2  # delivered as written, not in one piece
    assert "".join(pieces) == f"echo: {text}"
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    # The usage chunk comes last, with no choices, as OpenAI sends it.
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 8


async def test_the_raw_stream_is_server_sent_events_ending_with_done(stack, llm_tenant, rest):
    agent = await new_agent(rest)
    body = {"model": agent["id"], "messages": user_says("hi there"), "stream": True}
    async with (httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(), timeout=60) as http,
                http.stream("POST", "/v1/chat/completions", json=body) as response):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        job_id = response.headers["x-job-id"]
        assert response.headers["x-conversation-id"]
        data = [line.removeprefix("data: ") async for line in response.aiter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["id"] for c in chunks} == {f"chatcmpl-{job_id}"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: hi there"


async def test_the_user_field_keeps_one_conversation_whose_history_the_next_request_sees(ai, rest, stack):
    agent = await new_agent(rest)
    first, second = f"{marker()} my name is Ada", f"{marker()} what is my name?"
    user = f"door-user-{uuid.uuid4().hex[:6]}"
    one = await ai.chat.completions.with_raw_response.create(model=agent["id"], messages=user_says(first), user=user)
    # The client sends what it had; only the last message is new (the rest is ignored: the server has it).
    history = [*user_says(first), {"role": "assistant", "content": one.parse().choices[0].message.content},
               *user_says(second)]
    two = await ai.chat.completions.with_raw_response.create(model=agent["id"], messages=history, user=user)
    assert one.headers["x-conversation-id"] == two.headers["x-conversation-id"]
    [sent] = await chat_requests(stack, second.split()[0])
    said = [(m["role"], m["content"]) for m in sent["messages"] if m["role"] != "system"]
    assert said == [("user", first), ("assistant", f"echo: {first}"), ("user", second)]
    stored = await messages_of(rest, two.headers["x-conversation-id"])
    assert [m["content"] for m in stored if m["role"] == "user"] == [first, second]
    # Another user, and the X-AgentMem-User header (which wins over `user`), get a conversation of their own.
    other = await ai.chat.completions.with_raw_response.create(
        model=agent["id"], messages=user_says("hello"), user=user, extra_headers={"X-AgentMem-User": "grace"})
    assert other.headers["x-conversation-id"] != one.headers["x-conversation-id"]
    grace = (await rest.get(f"/api/v1/conversations/{other.headers['x-conversation-id']}")).json()
    assert grace["user_id"] == "grace"


async def test_first_requests_at_once_for_a_new_user_make_one_conversation(stack, llm_tenant, rest):
    agent = await new_agent(rest)
    user = f"racer-{uuid.uuid4().hex[:6]}"
    body = {"model": agent["id"], "messages": user_says("hi"), "user": user}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=llm_tenant.headers(), timeout=60) as http:
        responses = await asyncio.gather(*[http.post("/v1/chat/completions", json=body) for _ in range(4)])
    # One turn at a time per conversation: the others are told it is busy (OpenAI clients retry a 409).
    assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
    assert any(r.status_code == 200 for r in responses)
    assert all(r.json()["error"]["code"] == "conversation_busy" for r in responses if r.status_code == 409)
    listed = (await rest.get(f"/api/v1/agents/{agent['id']}/conversations", params={"user_id": user})).json()
    assert len(listed["items"]) == 1
    assert {r.headers["x-conversation-id"] for r in responses if r.status_code == 200} == {listed["items"][0]["id"]}


async def test_the_conversation_header_posts_to_that_conversation_of_the_agent(ai, rest):
    agent, other_agent = await new_agent(rest), await new_agent(rest)
    conversation = (await rest.post(f"/api/v1/agents/{agent['id']}/conversations", json={"user_id": "lin"})).json()
    raw = await ai.chat.completions.with_raw_response.create(
        model=agent["id"], messages=user_says("into this one"),
        extra_headers={"X-AgentMem-Conversation": conversation["id"]})
    assert raw.headers["x-conversation-id"] == conversation["id"]
    assert [m["content"] for m in await messages_of(rest, conversation["id"])] == ["into this one",
                                                                                   "echo: into this one"]
    with pytest.raises(openai.NotFoundError) as wrong_agent:
        await ai.chat.completions.create(model=other_agent["id"], messages=user_says("x"),
                                         extra_headers={"X-AgentMem-Conversation": conversation["id"]})
    assert wrong_agent.value.code == "conversation_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as wrong_user:
        await ai.chat.completions.create(model=agent["id"], messages=user_says("x"), user="someone-else",
                                         extra_headers={"X-AgentMem-Conversation": conversation["id"]})
    assert wrong_user.value.code == "conversation_user_mismatch"
    assert len(await messages_of(rest, conversation["id"])) == 2


async def test_an_unknown_model_or_another_orgs_agent_is_not_found(ai, rest, stack, other_tenant):
    with pytest.raises(openai.NotFoundError) as unknown:
        await ai.chat.completions.create(model="gpt-4o", messages=user_says("hi"))
    assert unknown.value.code == "model_not_found" and "gpt-4o" in unknown.value.message
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as theirs:
        their_agent = await new_agent(theirs)
    for model in (their_agent["id"], their_agent["name"]):
        with pytest.raises(openai.NotFoundError) as foreign:
            await ai.chat.completions.create(model=model, messages=user_says("hi"), stream=True)
        assert foreign.value.code == "model_not_found"


async def test_models_lists_the_organizations_agents_only(ai, rest, stack, other_tenant):
    mine = [await new_agent(rest), await new_agent(rest)]
    async with httpx.AsyncClient(base_url=stack.api_url, headers=other_tenant.headers(), timeout=30) as theirs:
        theirs_agent = await new_agent(theirs)
    models = [m async for m in ai.models.list()]
    assert [(m.id, m.name, m.owned_by, m.object) for m in models] == [
        (a["id"], a["name"], "agentmem", "model") for a in mine]
    assert theirs_agent["id"] not in {m.id for m in models}


async def test_requests_the_door_cannot_honour_are_refused_and_store_nothing(ai, rest):
    agent = await new_agent(rest)
    with pytest.raises(openai.UnprocessableEntityError) as not_user:
        await ai.chat.completions.create(model=agent["id"], messages=[*user_says("hi"),
                                                                      {"role": "assistant", "content": "hello"}])
    assert "last message" in not_user.value.message
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with pytest.raises(openai.UnprocessableEntityError) as tools:
        await ai.chat.completions.create(model=agent["id"], messages=user_says("hi"), tools=[tool])
    assert tools.value.code == "client_tools_unsupported"
    listed = (await rest.get(f"/api/v1/agents/{agent['id']}/conversations")).json()
    assert listed["items"] == []


async def test_the_agents_own_tool_calls_stay_internal_and_its_words_around_them_are_the_answer(ai, rest, stack):
    agent = await new_agent(rest)
    mark = marker()
    steps = [{"content": "Let me look.", "tool_calls": [{"name": "memory_search", "arguments": {"query": "tea"}}]},
             {"content": "You like green tea."}]
    await script(stack, mark, steps)
    completion = await ai.chat.completions.create(model=agent["id"], messages=user_says(f"{mark} what do I like?"))
    message = completion.choices[0].message
    assert message.content == "Let me look.\n\nYou like green tea." and not message.tool_calls
    assert completion.usage.completion_tokens > 0
    await script(stack, mark, steps)
    stream = await ai.chat.completions.create(model=agent["id"], messages=user_says(f"{mark} and again?"),
                                              stream=True)
    chunks = [c async for c in stream]
    assert all(not c.choices[0].delta.tool_calls for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me look.\n\nYou like green tea."


async def test_a_turn_stopped_by_its_step_limit_finishes_with_length(ai, rest, stack):
    agent = await new_agent(rest, max_steps=1)
    mark = marker()
    await script(stack, mark, [{"tool_calls": [{"name": "memory_search", "arguments": {"query": "x"}}]}])
    completion = await ai.chat.completions.create(model=agent["id"], messages=user_says(f"{mark} search"))
    assert completion.choices[0].finish_reason == "length" and not completion.choices[0].message.tool_calls


async def test_a_failed_turn_is_its_jobs_error_and_the_client_does_not_send_it_again(ai, rest, stack):
    agent = await new_agent(rest)
    mark = marker()
    await script(stack, mark, [{"status": 400}])  # the provider refuses: a permanent failure
    with pytest.raises(openai.APIStatusError) as failed:
        await ai.chat.completions.with_raw_response.create(model=agent["id"], messages=user_says(f"{mark} hi"),
                                                           user="refused")
    assert failed.value.status_code == 502 and failed.value.code == "llm_rejected"
    assert failed.value.response.headers["x-should-retry"] == "false"
    job = (await rest.get(f"/api/v1/jobs/{failed.value.response.headers['x-job-id']}")).json()
    assert job["status"] == "failed" and job["error"]["code"] == "llm_rejected"
    assert len(await chat_requests(stack, mark)) == 1  # the client (max_retries=2) did not post it again
    await script(stack, mark, [{"status": 400}])
    stream = await ai.chat.completions.create(model=agent["id"], messages=user_says(f"{mark} again"), stream=True,
                                              user="refused-streaming")
    with pytest.raises(openai.APIError) as mid_stream:
        async for _ in stream:
            pass
    assert mid_stream.value.code == "llm_rejected"


async def test_a_viewer_key_may_list_models_but_not_talk(stack, llm_tenant, rest):
    agent = await new_agent(rest)
    async with openai.AsyncOpenAI(base_url=stack.api_url + "/v1", api_key=llm_tenant.keys[Role.VIEWER],
                                  max_retries=0) as viewer:
        assert [m.id async for m in viewer.models.list()] == [agent["id"]]
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await viewer.chat.completions.create(model=agent["id"], messages=user_says("hi"))
    assert refused.value.code == "permission_denied"
    async with openai.AsyncOpenAI(base_url=stack.api_url + "/v1", api_key="amk_not_a_key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()


# --- WebSocket `send` -------------------------------------------------------------------------------------------

def terminal_event(frame: dict) -> bool:
    return frame["type"] == "error" or (frame["type"] == "event"
                                        and frame["event"]["type"] in ("succeeded", "failed", "cancelled"))


async def test_a_socket_send_posts_the_message_and_streams_its_turn(stack, llm_tenant, rest):
    agent = await new_agent(rest)
    conversation = (await rest.post(f"/api/v1/agents/{agent['id']}/conversations", json={})).json()
    text = "tell me something in many little words"
    reply = await socket_exchange(socket_url(stack.api_url), llm_tenant.headers(), {
        "action": "send", "conversation_id": conversation["id"], "content": text, "request_id": "r1"},
        until=terminal_event, timeout=90)
    sent, *events = reply.frames
    assert sent["type"] == "sent" and sent["request_id"] == "r1", reply.frames
    assert sent["message"]["role"] == "user" and sent["message"]["content"] == text
    kinds = [f["event"]["type"] for f in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "succeeded", kinds
    assert {f["event"]["job_id"] for f in events} == {sent["job_id"]}
    tokens = [f["event"]["data"]["text"] for f in events if f["event"]["type"] == "token"]
    assert len(tokens) >= 2 and "".join(tokens) == f"echo: {text}"
    assert [m["role"] for m in await messages_of(rest, conversation["id"])] == ["user", "assistant"]
    [entry] = (await rest.get("/api/v1/audit-logs", params={"target_id": sent["message"]["id"]})).json()["items"]
    assert (entry["action"], entry["result"], entry["details"]["via"]) == ("post_message", "success", "websocket")


async def test_a_second_send_while_the_turn_runs_is_conversation_busy(stack, llm_tenant, rest):
    agent = await new_agent(rest)
    conversation = (await rest.post(f"/api/v1/agents/{agent['id']}/conversations", json={})).json()
    mark = marker()
    await script(stack, mark, [{"content": "slowly answered", "delay": 1.5}])
    async with websockets.connect(socket_url(stack.api_url), additional_headers=llm_tenant.headers()) as ws:
        for request_id in ("first", "second"):
            await ws.send(json.dumps({"action": "send", "conversation_id": conversation["id"],
                                      "content": f"{mark} {request_id}", "request_id": request_id}))
        frames = []

        async def until_both_answered_and_done() -> None:
            while True:
                frames.append(json.loads(await ws.recv()))
                if frames[-1]["type"] == "unsubscribed":
                    return

        await asyncio.wait_for(until_both_answered_and_done(), 60)
    replies = {f["request_id"]: f for f in frames if f.get("request_id")}
    assert replies["first"]["type"] == "sent"
    assert replies["second"]["type"] == "error" and replies["second"]["code"] == "conversation_busy"
    assert replies["second"]["details"]["job_id"] == replies["first"]["job_id"]
    assert [m["content"] for m in await messages_of(rest, conversation["id"])] == [f"{mark} first",
                                                                                   "slowly answered"]


async def test_a_viewers_socket_may_not_send(stack, llm_tenant, rest):
    agent = await new_agent(rest)
    conversation = (await rest.post(f"/api/v1/agents/{agent['id']}/conversations", json={})).json()
    reply = await socket_exchange(socket_url(stack.api_url), llm_tenant.headers(Role.VIEWER), {
        "action": "send", "conversation_id": conversation["id"], "content": "hi"}, until=terminal_event)
    assert [(f["type"], f["code"]) for f in reply.frames] == [("error", "permission_denied")]
    assert await messages_of(rest, conversation["id"]) == []


async def test_a_send_to_another_orgs_conversation_is_not_found_and_bad_input_is_refused(stack, llm_tenant, rest,
                                                                                      other_tenant):
    agent = await new_agent(rest)
    conversation = (await rest.post(f"/api/v1/agents/{agent['id']}/conversations", json={})).json()
    url = socket_url(stack.api_url)
    reply = await socket_exchange(url, other_tenant.headers(), {
        "action": "send", "conversation_id": conversation["id"], "content": "hi"}, until=terminal_event)
    assert [(f["type"], f["code"]) for f in reply.frames] == [("error", "conversation_not_found")]
    # A NUL is refused as the frame is read, before its request_id is known.
    for bad, request_id in [({"conversation_id": "nope", "content": "hi"}, "bad"),
                            ({"conversation_id": conversation["id"], "content": "   "}, "bad"),
                            ({"conversation_id": conversation["id"], "content": "a\x00b"}, None)]:
        reply = await socket_exchange(url, llm_tenant.headers(), {"action": "send", "request_id": "bad", **bad},
                                      until=terminal_event)
        assert [(f["type"], f["code"], f.get("request_id")) for f in reply.frames] == [
            ("error", "invalid_input", request_id)], (bad, reply.frames)
    assert await messages_of(rest, conversation["id"]) == []
