"""core/llm_metrics.py and its rendering in core/metrics.py: LLM call figures any process writes, one scrape reads."""

from __future__ import annotations

import fakeredis
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import llm_metrics
from core.errors import LLMUnavailable
from core.llm import LLMClient
from core.llm_metrics import KEY, read_figures, record_call
from core.llm_types import ProviderSettings
from core.metrics import SnapshotCollector, render
from tests.unit.core.test_llm import Provider, completion


@pytest.fixture
async def server():
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server, monkeypatch):
    client = fakeredis.aioredis.FakeRedis(server=server, decode_responses=True)
    monkeypatch.setattr(llm_metrics, "configured_redis", lambda: client)
    yield client
    await client.aclose()


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


M1 = ("openai", "gpt-x")
M2 = ("openai_compatible", "llama|3")  # a `|` in a model name can't split its field


async def test_calls_add_up_into_counters_and_a_cumulative_histogram_per_provider_and_model(redis):
    await record_call("chat", "ok", 0.2, provider=M1[0], model=M1[1], prompt_tokens=100, completion_tokens=10,
                      cost_usd=0.25)
    await record_call("chat", "ok", 3.0, provider=M1[0], model=M1[1], prompt_tokens=50, completion_tokens=5,
                      cost_usd=0.5)
    await record_call("chat", "ok", 1.0, provider=M2[0], model=M2[1], prompt_tokens=7)
    await record_call("chat", "error", 400.0, provider=M1[0], model=M1[1])
    await record_call("stream", "rate_limited", provider=M1[0], model=M1[1])  # never sent: no duration
    figures = await read_figures()
    m2 = ("openai_compatible", "llama/3")
    assert figures.requests == {("chat", "ok", *M1): 2, ("chat", "ok", *m2): 1, ("chat", "error", *M1): 1,
                                ("stream", "rate_limited", *M1): 1}
    assert figures.tokens == {("chat", "prompt", *M1): 150, ("chat", "completion", *M1): 15,
                              ("chat", "prompt", *m2): 7}
    assert figures.cost_usd == {M1: pytest.approx(0.75)}
    count, total, cumulative = figures.durations[("chat", "ok", *M1)]
    assert count == 2 and total == pytest.approx(3.2)
    by_bound = dict(zip(llm_metrics.DURATION_BUCKETS, cumulative, strict=True))
    assert (by_bound[0.1], by_bound[0.25], by_bound[2.5], by_bound[5.0], by_bound[300.0]) == (0, 1, 1, 2, 2)
    # Beyond the last bound: only in +Inf (the count).
    assert figures.durations[("chat", "error", *M1)] == (1, 400.0, [0] * len(llm_metrics.DURATION_BUCKETS))
    assert ("stream", "rate_limited", *M1) not in figures.durations


async def test_the_scrape_shows_them_as_prometheus_families(redis):
    await record_call("chat", "ok", 0.3, provider=M1[0], model=M1[1], prompt_tokens=7, completion_tokens=3,
                      cost_usd=0.001)
    shown = samples(render(SnapshotCollector([], [], {}, await read_figures())))
    who = (("model", "gpt-x"), ("provider", "openai"))
    labels = (("kind", "chat"), *who[:1], ("outcome", "ok"), *who[1:])
    assert shown[("agentmem_llm_requests_total", labels)] == 1
    assert shown[("agentmem_llm_request_duration_seconds_count", labels)] == 1
    assert shown[("agentmem_llm_request_duration_seconds_sum", labels)] == pytest.approx(0.3)
    assert shown[("agentmem_llm_request_duration_seconds_bucket", (labels[0], ("le", "0.25"), *labels[1:]))] == 0
    assert shown[("agentmem_llm_request_duration_seconds_bucket", (labels[0], ("le", "0.5"), *labels[1:]))] == 1
    assert shown[("agentmem_llm_tokens_total", (("kind", "chat"), *who, ("type", "prompt")))] == 7
    assert shown[("agentmem_llm_tokens_total", (("kind", "chat"), *who, ("type", "completion")))] == 3
    assert shown[("agentmem_llm_cost_usd_total", who)] == pytest.approx(0.001)


async def test_fields_it_does_not_know_are_left_out(redis):
    await redis.hset(KEY, mapping={"requests|chat|ok|openai|m": 3, "requests|chat|weird|openai|m": 1,
                                   "requests|sql|ok|openai|m": 1, "bucket|chat|ok|openai|m": 1,
                                   "tokens|chat|cached|openai|m": 5, "something": 2,
                                   "requests|chat|ok": 4, "cost_usd": 1.5})  # the layout before models
    figures = await read_figures()
    assert figures.requests == {("chat", "ok", "openai", "m"): 3} and figures.tokens == {}
    assert figures.durations == {} and figures.cost_usd == {}


async def test_without_redis_nothing_is_written_and_with_redis_down_a_call_still_succeeds(server, redis, caplog,
                                                                                       monkeypatch):
    with monkeypatch.context() as unset:
        unset.setattr(llm_metrics, "configured_redis", lambda: None)
        await record_call("chat", "ok", 1.0)
        assert (await read_figures()).requests == {}
    assert await redis.exists(KEY) == 0
    server.connected = False
    await record_call("chat", "ok", 1.0)
    assert "figures dropped" in caplog.text


async def test_the_client_reports_each_call_with_its_outcome(redis, monkeypatch):
    llm = LLMClient(ProviderSettings(kind="openai_compatible", model="m", base_url="http://llm.test/v1",
                                     max_retries=0, prompt_price_per_million=1000.0),
                    http_client=httpx.AsyncClient(transport=httpx.MockTransport(
                        Provider(completion(prompt=30, completion_tokens=4), httpx.Response(503)))))
    await llm.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(LLMUnavailable):
        await llm.chat([{"role": "user", "content": "hi"}])
    figures = await read_figures()
    who = ("openai_compatible", "m")
    assert figures.requests == {("chat", "ok", *who): 1, ("chat", "error", *who): 1}
    assert figures.tokens == {("chat", "prompt", *who): 30, ("chat", "completion", *who): 4}
    assert figures.cost_usd == {who: pytest.approx(30 * 1000.0 / 1e6)}
    assert figures.durations[("chat", "ok", *who)][0] == 1 and figures.durations[("chat", "error", *who)][0] == 1
