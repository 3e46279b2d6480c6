"""Agent turns through a worker SIGKILLed in the middle: during a model call after its tools finished, during a
sandboxed tool, and while the answer streams. A fresh worker resumes the turn from its stored steps: no
message is written twice, a tool whose result is stored does not run again, and only the step that was
under way is done again (a model call asked once more, a tool that never finished run once more).

The stack is this module's own, on a Redis database of its own, so no other worker takes its messages and
killing its worker disturbs no other test; it has one worker at a time and the maintenance scheduler
running as in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import pytest

from schemas.permissions import Role
from tests.support.sse import finish, follow
from tests.support.stack import Stack


def _own_redis_database(url: str) -> str:
    """The same Redis server, another numbered database: queues, events and worker presence of their own."""
    parts = urlsplit(url)
    current = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(current + 1) % 16}"))


@pytest.fixture(scope="module")
def turn_stack(services):
    log_dir = Path(tempfile.mkdtemp(prefix="agentmem-test-turn-faults-", dir="/tmp"))
    st = Stack(dataclasses.replace(services, redis_url=_own_redis_database(services.redis_url)), log_dir)
    try:
        st.start(workers=1)
    except Exception:
        print(st.logs())
        st.stop()
        raise
    st.spawn("scheduler", ["-m", "cli.main", "scheduler"], env=st.env | {"AGENTMEM_SCHEDULER_INTERVAL_SECONDS": "0.5"})
    yield st
    st.stop()
    print(f"\nturn-fault logs kept in {log_dir}")


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request, turn_stack):
    # This module's stack, not the session's (which these tests don't start).
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(turn_stack.logs())


@pytest.fixture
async def chat(turn_stack, tenant):
    """The test's organization, with this stack's model server as its default LLM provider."""
    async with httpx.AsyncClient(base_url=turn_stack.api_url, headers=tenant.headers(),
                                 timeout=httpx.Timeout(30, read=120)) as client:
        async with httpx.AsyncClient(base_url=turn_stack.api_url, headers=tenant.headers(Role.ADMIN),
                                     timeout=30) as admin:
            response = await admin.post("/api/v1/llm/configs", json={
                "name": "test server", "provider": "openai_compatible", "model": "test-chat",
                "base_url": turn_stack.model_url + "/v1", "api_key": "test-key", "is_default": True})
            assert response.status_code == 201, response.text
        yield client


async def _until(condition, what: str, timeout: float = 60):
    """Poll `condition` (an async callable) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return value


async def _script(stack: Stack, mark: str, responses: list[dict]) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(f"{stack.model_url}/scripts", json={"marker": mark, "responses": responses})
         ).raise_for_status()


async def _chat_requests(stack: Stack, mark: str) -> list[dict]:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{stack.model_url}/chat/requests", params={"contains": mark})).json()


async def _tool(chat, source: str, json_schema: dict) -> dict:
    name = f"t_{uuid.uuid4().hex[:10]}"
    response = await chat.post("/api/v1/tools", json={"name": name, "language": "python",
                                                      "source": source.replace("NAME", name),
                                                      "json_schema": json_schema})
    assert response.status_code == 201, response.text
    return response.json()


async def _conversation(chat, scope: str, **agent_fields) -> dict:
    agent = await chat.post("/api/v1/agents", json={"name": f"agent-{uuid.uuid4().hex[:8]}",
                                                    "system": "You are a helpful test agent.", **agent_fields})
    assert agent.status_code == 201, agent.text
    conversation = await chat.post(f"/api/v1/agents/{agent.json()['id']}/conversations", json={"user_id": scope})
    assert conversation.status_code == 201, conversation.text
    return conversation.json()


async def _say(chat, conversation_id: str, content: str) -> str:
    response = await chat.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": content})
    assert response.status_code == 202, response.text
    return response.json()["job"]["id"]


async def _messages(chat, conversation_id: str) -> list[dict]:
    response = await chat.get(f"/api/v1/conversations/{conversation_id}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _job(chat, job_id: str) -> dict:
    response = await chat.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def _n_requests(stack: Stack, mark: str, n: int) -> bool:
    return len(await _chat_requests(stack, mark)) >= n


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line mentions `text` (a tool's name: its bwrap, launcher and interpreter)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != os.getpid() and any(text in part for part in process.info["cmdline"] or ()):
            found.append(process.pid)
    return found


async def _gone(name: str) -> bool:
    return not _processes_mentioning(name)


def _kill_worker_running(stack: Stack, job: dict) -> None:
    """SIGKILL the worker process running `job` (no ack, no lease released), then start a fresh worker."""
    assert job["status"] == "running" and job["worker"], job
    pid = int(job["worker"].rsplit(":", 1)[1])
    proc = next(proc for name, proc in stack.procs.items() if name.startswith("worker")
                      and proc.popen.poll() is None
                      and pid in [c.pid for c in psutil.Process(proc.popen.pid).children(recursive=True)])
    os.kill(pid, signal.SIGKILL)
    proc.popen.wait(timeout=30)  # Dramatiq's main process stops once its child is gone
    stack.start_worker(f"worker-{len(stack.procs)}")


async def _after_resume(chat, job_id: str, conversation_id: str) -> tuple[dict, list, list[dict]]:
    """The finished job (run twice: the killed attempt and the resumed one), all its events, its messages."""
    job = await finish(chat, job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2, job
    events = await follow(chat, job_id, last_event_id="0-0")  # the stream from its first event
    assert [e.data["data"]["attempt"] for e in events if e.event == "started"] == [1, 2]
    messages = await _messages(chat, conversation_id)
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), "a gap or a repeat in the seqs"
    conversation = (await chat.get(f"/api/v1/conversations/{conversation_id}")).json()
    assert conversation["message_count"] == len(messages)
    return job, events, messages


ECHO_TOOL = "def NAME(word):\n    return {'word': word, 'shout': word.upper()}\n"
WORD_SCHEMA = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"],
               "additionalProperties": False}


async def test_a_worker_killed_during_a_model_call_resumes_without_running_finished_tools_again(
        chat, turn_stack, scope):
    tool = await _tool(chat, ECHO_TOOL, WORD_SCHEMA)
    conversation = await _conversation(chat, scope, tool_ids=[tool["id"]])
    mark = f"zq{uuid.uuid4().hex[:10]}"
    fact = f"The user flies red kites on Sundays ({mark})."
    await _script(turn_stack, mark, [
        {"tool_calls": [{"name": tool["name"], "arguments": {"word": "hello"}},
                        {"name": "memory_insert", "arguments": {"content": fact}}]},
        {"content": "never delivered: the worker dies while the model thinks", "delay": 30},
        {"content": "Saved, and HELLO."}])
    job_id = await _say(chat, conversation["id"], f"{mark} remember my kites and shout hello")

    # The second model call is held by the model server: both tool results are stored by then.
    await _until(lambda: _n_requests(turn_stack, mark, 2), "the second model call")
    before = await _messages(chat, conversation["id"])
    assert [m["role"] for m in before] == ["user", "assistant", "tool", "tool"]
    _kill_worker_running(turn_stack, await _job(chat, job_id))

    job, events, messages = await _after_resume(chat, job_id, conversation["id"])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m["id"] for m in messages[:4]] == [m["id"] for m in before], "a stored step was written again"
    assert messages[-1]["content"] == job["result"]["content"] == "Saved, and HELLO."
    calls = {c["id"]: c["name"] for c in messages[1]["tool_calls"]}
    results = {m["tool_call_id"]: m for m in messages if m["role"] == "tool"}
    assert set(results) == set(calls)
    by_name = {calls[call_id]: json.loads(m["content"]) for call_id, m in results.items()}
    assert json.loads(by_name[tool["name"]]["stdout"]) == {"word": "hello", "shout": "HELLO"}
    assert by_name["memory_insert"]["stored"] is True
    # A tool run again would announce its result again (the stored message stays the first run's).
    announced = Counter(e.data["data"]["tool_call_id"] for e in events if e.event == "tool_result")
    assert announced == Counter(set(calls)), announced
    memories = (await chat.get("/api/v1/memories", params={"user_id": scope})).json()["items"]
    assert [m["content"] for m in memories] == [fact]
    # The held call was asked once more, with the tools' results; the first call was not.
    requests = await _chat_requests(turn_stack, mark)
    assert len(requests) == 3
    assert [m["role"] for m in requests[2]["messages"][-3:]] == ["assistant", "tool", "tool"]


SLEEPY_TOOL = "import time\n\ndef NAME(seconds):\n    time.sleep(seconds)\n    return {'slept': seconds}\n"
SECONDS_SCHEMA = {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}


async def test_a_worker_killed_during_a_sandboxed_tool_runs_the_tool_again_but_not_the_model_call(
        chat, turn_stack, scope):
    tool = await _tool(chat, SLEEPY_TOOL, SECONDS_SCHEMA)
    conversation = await _conversation(chat, scope, tool_ids=[tool["id"]])
    mark = f"zq{uuid.uuid4().hex[:10]}"
    await _script(turn_stack, mark, [{"tool_calls": [{"name": tool["name"], "arguments": {"seconds": 4}}]},
                                     {"content": "Done waiting."}])
    job_id = await _say(chat, conversation["id"], f"{mark} wait a little for me")

    async def tool_running():
        return _processes_mentioning(tool["name"])

    await _until(tool_running, "the tool's sandbox")
    _kill_worker_running(turn_stack, await _job(chat, job_id))
    # The sandbox dies with its worker (bwrap --die-with-parent, the launcher's parent-death signal) ...
    await _until(lambda: _gone(tool["name"]), "the killed worker's sandbox to be gone", timeout=20)
    # ... before its tool could answer: nothing of it was stored.
    assert [m["role"] for m in await _messages(chat, conversation["id"])] == ["user", "assistant"]

    job, events, messages = await _after_resume(chat, job_id, conversation["id"])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    [call] = messages[1]["tool_calls"]
    # The tool's result is stored, so the resumed worker ran it (the killed run never finished).
    result = json.loads(messages[2]["content"])
    assert messages[2]["tool_call_id"] == call["id"] and result["reason"] == "exited"
    assert json.loads(result["stdout"]) == {"slept": 4}
    assert [e.data["data"]["tool_call_id"] for e in events if e.event == "tool_result"] == [call["id"]]
    assert messages[-1]["content"] == job["result"]["content"] == "Done waiting."
    # The model was asked for the tool call once, and once for the answer after it.
    assert len(await _chat_requests(turn_stack, mark)) == 2
    assert _processes_mentioning(tool["name"]) == []


async def test_a_worker_killed_while_the_answer_streams_asks_once_more_and_stores_one_answer(
        chat, turn_stack, scope):
    conversation = await _conversation(chat, scope)
    mark = f"zq{uuid.uuid4().hex[:10]}"
    slow = " ".join(f"word{i}" for i in range(40))
    await _script(turn_stack, mark, [{"content": slow, "chunk_delay": 0.25}, {"content": "The answer, whole."}])
    job_id = await _say(chat, conversation["id"], f"{mark} tell me a long story")

    await follow(chat, job_id, stop_after=lambda e: e.event == "token")
    _kill_worker_running(turn_stack, await _job(chat, job_id))

    job, events, messages = await _after_resume(chat, job_id, conversation["id"])
    assert [(m["role"], m["content"]) for m in messages] == [("user", f"{mark} tell me a long story"),
                                                             ("assistant", "The answer, whole.")]
    assert job["result"]["content"] == "The answer, whole." and job["result"]["steps"] == 1
    stored = [e.data["data"]["message"]["id"] for e in events if e.event == "message"]
    assert stored == [messages[1]["id"]], "the half-streamed answer was stored"
    # The killed attempt's tokens stay in the stream; a client starts the step over at the second `started`.
    restart = max(i for i, e in enumerate(events) if e.event == "started")
    first = "".join(e.data["data"]["text"] for e in events[:restart] if e.event == "token")
    assert first and slow.startswith(first) and first != slow
    assert "".join(e.data["data"]["text"] for e in events[restart:] if e.event == "token") == "The answer, whole."
    assert len(await _chat_requests(turn_stack, mark)) == 2
