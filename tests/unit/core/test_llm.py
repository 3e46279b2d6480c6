"""core/llm.py and core/llm_retry.py: retries and Retry-After, error mapping, JSON repair, streaming, limits.

The `openai` client talks to an `httpx.MockTransport`: real request building and response parsing, no socket.
Waits between retries are recorded instead of slept (`waits`), except where a test measures them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import BaseModel

from core import llm_retry
from core.errors import (
    LLMOutputInvalid,
    LLMRejected,
    LLMUnavailable,
    PermanentJobError,
    TransientJobError,
    URLNotAllowed,
)
from core.llm import LLMClient, ProviderSettings, ToolCall, Usage, provider_semaphore
from core.llm_retry import RETRY_AFTER_CAP_SECONDS, backoff_seconds, parse_retry_after
from core.outbound import GuardedTransport, OutboundPolicy, check_url, guarded_client
from tests.unit.core.test_outbound import FakeNetwork, Resolver

real_backoff = backoff_seconds


class Facts(BaseModel):
    facts: list[str]
    confidence: float


def completion(content: str | None = "ok", *, tool_calls: list[dict] | None = None, prompt: int = 3,
               completion_tokens: int = 2, finish: str = "stop") -> httpx.Response:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for i, c in enumerate(tool_calls)]
    return httpx.Response(200, json={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                  "total_tokens": prompt + completion_tokens}})


def error(status: int, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, json={"error": {"message": f"status {status}",
                                                                         "type": "test"}})


class Provider:
    """A scripted endpoint: answers in order, records every request body."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return await answer(request)
        return answer


def client(provider: Provider, **settings) -> LLMClient:
    settings = {"kind": "openai_compatible", "model": "test-model", "base_url": "http://llm.test/v1",
                "max_retries": 3} | settings
    return LLMClient(ProviderSettings(**settings), http_client=httpx.AsyncClient(
        transport=httpx.MockTransport(provider)))


@pytest.fixture(autouse=True)
def waits(monkeypatch) -> list[tuple[int, float | None]]:
    """(attempt, Retry-After hint) of every wait before a retry; nothing is actually slept."""
    hints: dict[int, float | None] = {}
    slept: list[tuple[int, float | None]] = []

    def backoff(attempt: int, hinted: float | None) -> float:
        hints[attempt] = hinted
        return 0.0

    # Called just before each sleep (the wait is also computed for the last attempt, then not slept).
    monkeypatch.setattr(llm_retry, "_log_retry", lambda state: slept.append((state.attempt_number,
                                                                              hints[state.attempt_number])))
    monkeypatch.setattr(llm_retry, "backoff_seconds", backoff)
    return slept


# --- Retry-After ----------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
    ({"Retry-After": "-3"}, None),
    ({"Retry-After": "tomorrow-ish"}, None),
    ({"Retry-After": ""}, None),
    ({}, None),
    (None, None),
])
def test_retry_after_in_seconds(headers, expected):
    assert parse_retry_after(headers) == expected


def test_retry_after_as_an_http_date_counts_from_now():
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=42), usegmt=True)
    assert parse_retry_after({"Retry-After": later}, now=now.timestamp()) == pytest.approx(42)
    assert parse_retry_after({"Retry-After": earlier}, now=now.timestamp()) == 0.0


def test_the_wait_is_at_least_the_hint_and_otherwise_grows_with_a_ceiling():
    assert all(5.0 <= real_backoff(1, 5.0) <= 6.0 for _ in range(200))
    assert all(0 < real_backoff(1, None) <= 1.05 for _ in range(200))
    assert all(0 < real_backoff(30, None) <= llm_retry.BACKOFF_MAX_SECONDS + 0.05 for _ in range(200))
    # Jittered: many workers told the same thing do not all come back at once.
    assert len({round(real_backoff(3, None), 6) for _ in range(50)}) > 40


# --- error mapping --------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_a_rejection_fails_at_once_as_permanent(status, waits):
    provider = Provider(error(status))
    with pytest.raises(LLMRejected) as caught:
        await client(provider).chat([{"role": "user", "content": "hi"}])
    assert len(provider.requests) == 1 and waits == []
    assert isinstance(caught.value, PermanentJobError) and caught.value.code == "llm_rejected"
    assert caught.value.details["status"] == status


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_statuses_are_retried_then_unavailable(status, waits):
    provider = Provider(error(status))
    with pytest.raises(LLMUnavailable) as caught:
        await client(provider, max_retries=3).chat([{"role": "user", "content": "hi"}])
    # Ours are the only retries (the openai package's are off): 1 + max_retries requests in all.
    assert len(provider.requests) == 4 and [a for a, _ in waits] == [1, 2, 3]
    assert isinstance(caught.value, TransientJobError) and caught.value.code == "llm_unavailable"
    assert caught.value.details["status"] == status


async def test_no_retries_configured_means_one_request(waits):
    provider = Provider(error(500))
    with pytest.raises(LLMUnavailable):
        await client(provider, max_retries=0).chat([{"role": "user", "content": "hi"}])
    assert len(provider.requests) == 1 and waits == []


async def test_retry_after_is_passed_to_the_wait_and_the_call_then_succeeds(waits):
    provider = Provider(error(429, {"Retry-After": "2"}), error(503, {"retry-after-ms": "1500"}), completion("fine"))
    result = await client(provider).chat([{"role": "user", "content": "hi"}])
    assert result.content == "fine"
    assert waits == [(1, 2.0), (2, 1.5)]


async def test_a_retry_after_beyond_the_cap_is_left_to_the_broker(waits):
    provider = Provider(error(429, {"Retry-After": str(int(RETRY_AFTER_CAP_SECONDS) + 60)}), completion())
    with pytest.raises(LLMUnavailable) as caught:
        await client(provider).chat([{"role": "user", "content": "hi"}])
    assert len(provider.requests) == 1 and waits == []
    assert caught.value.details["retry_after"] == RETRY_AFTER_CAP_SECONDS + 60


async def test_connection_failures_are_retried_then_unavailable(waits):
    provider = Provider(httpx.ConnectError("refused"))
    with pytest.raises(LLMUnavailable, match="could not be reached"):
        await client(provider, max_retries=2).chat([{"role": "user", "content": "hi"}])
    assert len(provider.requests) == 3


async def test_a_slow_answer_times_out_as_unavailable(waits):
    async def slow(request):
        await asyncio.sleep(5)
        return completion()

    provider = Provider(slow)
    with pytest.raises(LLMUnavailable, match=r"could not be reached or gave no usable answer \(timeout 0.05 s\)"):
        await client(provider, timeout_seconds=0.05, max_retries=1).chat([{"role": "user", "content": "hi"}])
    assert len(provider.requests) == 2


# --- what a failure says: nothing about what answered ---------------------------------------------

def html(status: int, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/html", **(headers or {})},
                          text="<html><body><h1>Internal admin console</h1> nginx/1.18 on db-7</body></html>")


async def _never_answers(request):
    await asyncio.sleep(5)
    return completion()


@pytest.mark.parametrize("answer", [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ConnectTimeout("timed out"),
    httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    _never_answers,
    html(404), html(401), html(500), html(503, {"Retry-After": "3600"}),
    httpx.Response(302, headers={"location": "http://10.0.0.7/"}),
    httpx.Response(404, text="404 page not found"),
    httpx.Response(200, text="<html>welcome</html>", headers={"content-type": "text/html"}),
    httpx.Response(200, json={"status": "ok", "version": "internal-2.3"}),
], ids=["refused", "connect-timeout", "tls", "disconnect", "no-answer", "html-404", "html-401", "html-500",
        "html-503-retry-after", "redirect", "plain-404", "html-200", "json-200"])
async def test_every_failure_that_is_not_the_providers_own_answer_reads_the_same(answer, waits):
    provider = Provider(answer)
    with pytest.raises(LLMUnavailable) as caught:
        await client(provider, max_retries=2, timeout_seconds=0.05).chat([{"role": "user", "content": "hi"}])
    # One message, one code, the same details and the same number of attempts, whatever answered or didn't.
    assert caught.value.message == ("LLM provider 'default' (test-model) could not be reached or gave no usable "
                                    "answer (timeout 0.05 s); the service's log has the cause")
    assert caught.value.code == "llm_unavailable" and caught.value.details == {"provider": "default"}
    assert len(provider.requests) == 3 and [hint for _, hint in waits] == [None, None]


@pytest.mark.parametrize("answer", [
    html(404), httpx.Response(200, text="<html>welcome</html>", headers={"content-type": "text/html"}),
    httpx.Response(200, json={"object": "list"}), httpx.ConnectError("[Errno 111] Connection refused"),
], ids=["html-404", "html-200", "json-200", "refused"])
async def test_embeddings_fail_the_same_way(answer, waits):
    provider = Provider(answer)
    with pytest.raises(LLMUnavailable, match="could not be reached or gave no usable answer"):
        await client(provider, max_retries=1).embed(["a text"], "test-embedder")
    assert len(provider.requests) == 2


async def test_a_stream_that_is_no_api_answer_fails_the_same_way(waits):
    provider = Provider(httpx.Response(200, text="<html>welcome</html>", headers={"content-type": "text/html"}))
    with pytest.raises(LLMUnavailable, match="could not be reached or gave no usable answer"):
        [event async for event in client(provider).stream([{"role": "user", "content": "hi"}])]


@pytest.mark.parametrize("body", [{"error": {"message": "Incorrect API key provided: sk-…abcd", "type": "auth"}},
                                  {"object": "error", "message": "Incorrect API key provided: sk-…abcd"}],
                         ids=["openai", "vllm"])
async def test_the_providers_own_error_answer_is_reported_with_its_status(body):
    with pytest.raises(LLMRejected) as caught:
        await client(Provider(httpx.Response(401, json=body))).chat([{"role": "user", "content": "hi"}])
    assert caught.value.message == ("LLM provider 'default' (test-model) rejected the request (401): "
                                    "Incorrect API key provided: sk-…abcd")
    assert caught.value.details == {"provider": "default", "status": 401}


async def test_a_provider_refused_when_connecting_fails_at_once_with_url_not_allowed(waits):
    network = FakeNetwork()
    guard = OutboundPolicy(resolver=Resolver({"llm.example": [["93.184.216.34"], ["10.0.0.5"]]}))
    await check_url("http://llm.example/v1", policy=guard)  # as when it was stored
    llm = LLMClient(ProviderSettings(kind="openai_compatible", model="m", base_url="http://llm.example/v1",
                                     max_retries=3, name="rebinding"),
                    http_client=guarded_client(policy=guard, network_backend=network))
    with pytest.raises(URLNotAllowed) as caught:
        await llm.chat([{"role": "user", "content": "hi"}])
    assert isinstance(caught.value, PermanentJobError) and caught.value.code == "url_not_allowed"
    assert caught.value.details == {"host": "llm.example", "rule": "private", "provider": "rebinding"}
    assert "10.0.0.5" not in caught.value.message and network.connects == [] and waits == []


async def test_an_organizations_provider_goes_through_the_outbound_policy_and_the_operators_does_not(
        override_settings):
    override_settings(outbound_allow=None)
    configured = ProviderSettings(kind="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1", name="org")
    with pytest.raises(URLNotAllowed):  # refused before any connection is made
        await LLMClient(configured).chat([{"role": "user", "content": "hi"}])
    # The operator's (AGENTMEM_LLM_*) keeps the openai package's own client: a local model server stays usable.
    trusted = ProviderSettings(kind="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1", trusted=True)
    assert not isinstance(LLMClient(trusted).openai._client._transport, GuardedTransport)


# --- chat -----------------------------------------------------------------------------------------

async def test_chat_sends_the_options_and_parses_tool_calls_and_usage():
    provider = Provider(completion(None, tool_calls=[{"name": "remember", "arguments": '{"fact": "tea"}'}],
                                   prompt=11, completion_tokens=4, finish="tool_calls"))
    heard: list[Usage] = []
    llm = LLMClient(ProviderSettings(kind="openai_compatible", model="m1", base_url="http://llm.test/v1",
                                     api_key="sk-test"), on_usage=heard.append,
                    http_client=httpx.AsyncClient(transport=httpx.MockTransport(provider)))
    tools = [{"type": "function", "function": {"name": "remember", "parameters": {"type": "object"}}}]
    result = await llm.chat([{"role": "user", "content": "hi"}], tools=tools, tool_choice="required",
                            temperature=0.3, max_tokens=50, json_mode=True)
    [body] = provider.bodies
    assert body["model"] == "m1" and body["tools"] == tools and body["tool_choice"] == "required"
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert body["response_format"] == {"type": "json_object"}
    assert provider.requests[0].headers["authorization"] == "Bearer sk-test"
    assert result.finish_reason == "tool_calls" and result.content is None
    assert result.tool_calls == [ToolCall(id="call_0", name="remember", arguments='{"fact": "tea"}')]
    assert result.tool_calls[0].parsed() == {"fact": "tea"}
    assert result.usage == Usage(prompt_tokens=11, completion_tokens=4, calls=1)
    await llm.chat([{"role": "user", "content": "again"}])
    assert llm.usage == Usage(prompt_tokens=22, completion_tokens=8, calls=2)
    assert heard == [Usage(11, 4, 1), Usage(11, 4, 1)]


async def test_chat_without_options_sends_none_of_them():
    provider = Provider(completion())
    await client(provider).chat([{"role": "user", "content": "hi"}])
    assert not {"tools", "tool_choice", "response_format", "max_tokens"} & set(provider.bodies[0])


@pytest.mark.parametrize("arguments", ['{"fact": ', '["a list"]'])
def test_tool_call_arguments_that_are_not_an_object_are_invalid_output(arguments):
    with pytest.raises(LLMOutputInvalid):
        ToolCall(id="c", name="remember", arguments=arguments).parsed()


async def test_azure_calls_the_deployment_with_the_api_version():
    provider = Provider(completion("from azure"))
    llm = client(provider, kind="azure", model="gpt-deploy", base_url="https://res.openai.azure.com",
                 api_version="2024-10-21", api_key="az-key")
    assert (await llm.chat([{"role": "user", "content": "hi"}])).content == "from azure"
    url = provider.requests[0].url
    assert url.path == "/openai/deployments/gpt-deploy/chat/completions"
    assert url.params["api-version"] == "2024-10-21"
    assert provider.requests[0].headers["api-key"] == "az-key"


def test_usage_adds_up_and_round_trips_through_its_stored_shape():
    total = Usage(1, 2, 1).add(Usage(10, 20, 2))
    assert total.as_dict() == {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33, "calls": 3}
    assert Usage.from_dict(total.as_dict()) == total
    assert Usage.from_dict(None) == Usage()


def test_usage_costs_its_tokens_at_the_providers_prices_and_reports_a_cost_only_when_priced():
    priced = ProviderSettings(kind="openai", model="m", prompt_price_per_million=0.15,
                              completion_price_per_million=0.6)
    assert Usage(1_000_000, 500_000, 1).cost(priced) == pytest.approx(0.45)
    assert Usage(1000, 1000, 1).cost(ProviderSettings(kind="openai", model="m", completion_price_per_million=2.0)) \
        == pytest.approx(0.002)  # the prompt price unset counts as 0
    assert Usage(1000, 1000, 1).cost(ProviderSettings(kind="openai", model="m")) == 0.0
    total = Usage(10, 20, 1, cost_usd=0.1).add(Usage(1, 2, 1, cost_usd=0.2))
    assert total.as_dict() == {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33, "calls": 2,
                               "cost_usd": 0.3}  # rounded: no 0.30000000000000004
    assert Usage.from_dict(total.as_dict()).cost_usd == pytest.approx(0.3)
    assert "cost_usd" not in Usage(10, 20, 1).as_dict()


async def test_a_chat_and_a_stream_report_their_cost_and_embeddings_none():
    prices = {"prompt_price_per_million": 1.0, "completion_price_per_million": 10.0}
    answer = await client(Provider(completion(prompt=300, completion_tokens=20)), **prices).chat(
        [{"role": "user", "content": "hi"}])
    assert answer.usage.cost_usd == pytest.approx((300 * 1.0 + 20 * 10.0) / 1e6)
    llm = client(Provider(sse(delta(content="hi"), {"choices": [], "usage": {
        "prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}})), **prices)
    events = [e async for e in llm.stream([{"role": "user", "content": "hi"}])]
    assert events[-1].usage.cost_usd == pytest.approx(0.002) and llm.usage.cost_usd == pytest.approx(0.002)
    embedder = client(Provider(httpx.Response(200, json={"object": "list", "model": "e", "data": [
        {"object": "embedding", "index": 0, "embedding": [0.1]}], "usage": {"prompt_tokens": 9, "total_tokens": 9}})),
        **prices)
    await embedder.embed(["text"], model="e")
    assert embedder.usage.prompt_tokens == 9 and embedder.usage.cost_usd == 0.0  # the prices are the chat model's


# --- chat_json ------------------------------------------------------------------------------------

async def test_chat_json_asks_for_the_schema_and_validates():
    provider = Provider(completion('{"facts": ["likes tea"], "confidence": 0.9}'))
    result = await client(provider).chat_json([{"role": "system", "content": "Extract facts."},
                                               {"role": "user", "content": "I like tea"}], Facts)
    assert result == Facts(facts=["likes tea"], confidence=0.9)
    [body] = provider.bodies
    assert body["response_format"] == {"type": "json_object"}
    system = body["messages"][0]["content"]
    assert system.startswith("Extract facts.") and '"confidence"' in system and len(body["messages"]) == 2


async def test_chat_json_repairs_once_with_the_validation_error():
    provider = Provider(completion('{"facts": "likes tea"}'), completion('{"facts": ["likes tea"], "confidence": 1}'))
    result = await client(provider).chat_json([{"role": "user", "content": "I like tea"}], Facts)
    assert result.facts == ["likes tea"]
    first, repair = provider.bodies
    assert repair["messages"][:-2] == first["messages"]
    assert repair["messages"][-2] == {"role": "assistant", "content": '{"facts": "likes tea"}'}
    feedback = repair["messages"][-1]["content"]
    assert "- facts: Input should be a valid" in feedback and "- confidence: Field required" in feedback


async def test_chat_json_invalid_twice_is_invalid_output_after_exactly_two_calls():
    provider = Provider(completion("Sure! Here are the facts: tea."), completion('{"facts": []}'))
    llm = client(provider)
    with pytest.raises(LLMOutputInvalid) as caught:
        await llm.chat_json([{"role": "user", "content": "I like tea"}], Facts)
    assert len(provider.requests) == 2 and llm.usage.calls == 2
    assert caught.value.code == "llm_output_invalid" and caught.value.details["content"] == '{"facts": []}'


async def test_chat_json_forgives_code_fences():
    provider = Provider(completion('```json\n{"facts": [], "confidence": 0}\n```'))
    assert await client(provider).chat_json([{"role": "user", "content": "x"}], Facts) == Facts(facts=[],
                                                                                                 confidence=0)
    assert len(provider.requests) == 1


# --- stream ---------------------------------------------------------------------------------------

def sse(*chunks: dict) -> httpx.Response:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    text = "".join(f"data: {json.dumps(base | c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def delta(finish: str | None = None, **fields) -> dict:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


async def test_stream_yields_text_then_tool_calls_assembled_from_deltas_then_done():
    provider = Provider(sse(
        delta(role="assistant", content="Saving "), delta(content="two facts."),
        delta(tool_calls=[{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "remember", "arguments": ""}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"fact": "li'}}]),
        delta(tool_calls=[{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "forget", "arguments": '{"id'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": 'kes tea"}'}}]),
        delta(tool_calls=[{"index": 1, "function": {"arguments": '": 7}'}}]),
        delta("tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}}))
    llm = client(provider, max_concurrency=1)
    events = [e async for e in llm.stream([{"role": "user", "content": "hi"}])]
    assert [e.text for e in events if e.type == "text"] == ["Saving ", "two facts."]
    calls = [e.tool_call for e in events if e.type == "tool_call"]
    assert calls == [ToolCall("call_a", "remember", '{"fact": "likes tea"}'), ToolCall("call_b", "forget", '{"id": 7}')]
    assert events[-1].type == "done" and events[-1].finish_reason == "tool_calls"
    assert events[-1].usage == Usage(9, 12, 1) and llm.usage == Usage(9, 12, 1)
    body = provider.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # The permit held for the stream is given back.
    assert not provider_semaphore(llm.provider).locked()


async def test_a_stream_abandoned_half_way_gives_its_permit_back():
    provider = Provider(sse(delta(content="one "), delta(content="two"), delta("stop")))
    llm = client(provider, max_concurrency=1)
    events = llm.stream([{"role": "user", "content": "hi"}])
    assert (await anext(events)).text == "one "
    assert provider_semaphore(llm.provider).locked()
    await events.aclose()
    assert not provider_semaphore(llm.provider).locked()


async def test_opening_a_stream_is_retried():
    provider = Provider(error(502), sse(delta(content="hello"), delta("stop")))
    events = [e async for e in client(provider).stream([{"role": "user", "content": "hi"}])]
    assert [e.type for e in events] == ["text", "done"] and len(provider.requests) == 2


# --- concurrency and embeddings -------------------------------------------------------------------

async def test_calls_in_flight_never_exceed_max_concurrency():
    in_flight, most = 0, 0

    async def counted(request):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return completion()

    provider = Provider(counted)
    llm = client(provider, max_concurrency=2, name="limited")
    await asyncio.gather(*(llm.chat([{"role": "user", "content": str(i)}]) for i in range(8)))
    assert most == 2 and len(provider.requests) == 8


async def test_embed_returns_vectors_in_input_order_and_counts_tokens():
    provider = Provider(httpx.Response(200, json={
        "object": "list", "model": "e", "usage": {"prompt_tokens": 5, "total_tokens": 5},
        "data": [{"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
                 {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}]}))
    llm = client(provider)
    assert await llm.embed(["first", "second"], "emb-model") == [[1.0, 0.0], [0.0, 1.0]]
    assert provider.bodies[0]["model"] == "emb-model" and llm.usage == Usage(5, 0, 1)
    assert await llm.embed([], "emb-model") == [] and len(provider.requests) == 1
