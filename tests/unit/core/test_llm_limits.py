"""core/llm_limits.py: per-minute request and token limits shared through Redis, on a fake Redis and a fake clock.

Two `RateLimiter`s on one fake server stand for two worker processes. The clock only moves when a
limiter sleeps, so every wait is exact and nothing here takes time.
"""

from __future__ import annotations

import fakeredis
import httpx
import pytest

from core import llm_limits, llm_retry
from core.errors import LLMUnavailable, TransientJobError
from core.llm import LLMClient
from core.llm_limits import DEFAULT_COMPLETION_TOKENS, JITTER_SECONDS, WINDOW_SECONDS, RateLimiter, estimate_tokens
from core.llm_types import ProviderSettings
from tests.unit.core.test_llm import Provider, completion, delta, error, sse

START = 1_000_000 * WINDOW_SECONDS + 10.0  # ten seconds into a minute


class Clock:
    """A clock that moves only when someone sleeps; it records the sleeps."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
async def server():
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server):
    client = fakeredis.aioredis.FakeRedis(server=server, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limiter(redis, clock: Clock) -> RateLimiter:
    return RateLimiter(lambda: redis, clock=clock, sleep=clock.sleep)


def provider(**fields) -> ProviderSettings:
    return ProviderSettings(**{"kind": "openai_compatible", "model": "m", "base_url": "http://llm.test/v1",
                               "name": "main#abcd1234", "timeout_seconds": 60.0} | fields)


async def counts(redis, reservation) -> dict[str, int]:
    return {k: int(v) for k, v in (await redis.hgetall(reservation.key)).items()}


async def test_requests_over_the_limit_wait_for_the_next_minute(redis, clock):
    limits = limiter(redis, clock)
    rpm = provider(requests_per_minute=2)
    first, second = await limits.acquire(rpm, 10), await limits.acquire(rpm, 10)
    assert first.window == second.window and clock.sleeps == []
    third = await limits.acquire(rpm, 10)
    # It slept until the minute ended (plus at most the jitter), and counts in the next one.
    [slept] = clock.sleeps
    assert WINDOW_SECONDS - 10 <= slept <= WINDOW_SECONDS - 10 + JITTER_SECONDS
    assert third.window == first.window + 1
    assert await counts(redis, first) == {"requests": 2, "tokens": 20}  # the refused attempt was given back
    assert await counts(redis, third) == {"requests": 1, "tokens": 10}


async def test_a_wait_beyond_the_timeout_fails_at_once_as_a_transient_rate_limit(redis, clock):
    limits = limiter(redis, clock)
    rpm = provider(requests_per_minute=1, timeout_seconds=5)
    reserved = await limits.acquire(rpm, 10)
    with pytest.raises(LLMUnavailable) as caught:
        await limits.acquire(rpm, 10)
    assert isinstance(caught.value, TransientJobError) and clock.sleeps == []
    details = caught.value.details
    assert details["reason"] == "rate_limited" and details["limit"] == "requests_per_minute"
    assert details["value"] == 1 and details["retry_after"] == WINDOW_SECONDS - 10
    assert "1 requests per minute" in caught.value.message
    assert await counts(redis, reserved) == {"requests": 1, "tokens": 10}


async def test_limits_are_shared_by_processes_and_kept_apart_per_provider(redis, server, clock):
    other_process = fakeredis.aioredis.FakeRedis(server=server, decode_responses=True)
    rpm = provider(requests_per_minute=1, timeout_seconds=1)
    await limiter(redis, clock).acquire(rpm, 1)
    with pytest.raises(LLMUnavailable):
        await limiter(other_process, clock).acquire(rpm, 1)
    # Another key (its name carries a hash of the key), another base URL or another model: counted apart.
    for other in (provider(requests_per_minute=1, name="main#ffff0000"),
                  provider(requests_per_minute=1, base_url="http://elsewhere.test/v1"),
                  provider(requests_per_minute=1, model="bigger")):
        assert await limiter(other_process, clock).acquire(other, 1) is not None
    await other_process.aclose()


async def test_tokens_are_reserved_by_estimate_and_corrected_by_usage(redis, clock):
    limits = limiter(redis, clock)
    tpm = provider(tokens_per_minute=1000, timeout_seconds=1)
    first = await limits.acquire(tpm, 600)
    with pytest.raises(LLMUnavailable) as caught:
        await limits.acquire(tpm, 600)
    assert caught.value.details["limit"] == "tokens_per_minute"
    await limits.settle(first, 150)  # the call used far less than estimated
    assert await counts(redis, first) == {"requests": 1, "tokens": 150}
    second = await limits.acquire(tpm, 600)
    assert await counts(redis, second) == {"requests": 2, "tokens": 750}
    await limits.settle(second, 0)  # a failed request: its tokens come back, the request stays counted
    assert await counts(redis, second) == {"requests": 2, "tokens": 150}


async def test_a_request_larger_than_the_whole_allowance_goes_alone_in_an_empty_minute(redis, clock):
    limits = limiter(redis, clock)
    tpm = provider(tokens_per_minute=100)
    huge = await limits.acquire(tpm, 5000)
    assert clock.sleeps == [] and await counts(redis, huge) == {"requests": 1, "tokens": 5000}
    after = await limits.acquire(tpm, 10)  # the minute is spent: the next call waits for the next one
    assert len(clock.sleeps) == 1 and after.window == huge.window + 1


async def test_a_settlement_after_its_minute_ended_changes_nothing(redis, clock):
    limits = limiter(redis, clock)
    reserved = await limits.acquire(provider(tokens_per_minute=1000), 100)
    ttl = await redis.ttl(reserved.key)
    assert WINDOW_SECONDS < ttl <= 2 * WINDOW_SECONDS  # counters expire on their own
    clock.now += WINDOW_SECONDS
    await limits.settle(reserved, 900)
    assert await counts(redis, reserved) == {"requests": 1, "tokens": 100}


async def test_a_provider_without_limits_costs_no_redis_command(clock):
    def no_redis():
        raise AssertionError("Redis was asked")

    assert await RateLimiter(no_redis, clock=clock, sleep=clock.sleep).acquire(provider(), 10 ** 9) is None


async def test_without_redis_or_with_redis_down_the_limits_are_skipped(server, redis, clock, caplog):
    limited = provider(requests_per_minute=1)
    assert await RateLimiter(lambda: None, clock=clock, sleep=clock.sleep).acquire(limited, 1) is None
    server.connected = False
    assert await limiter(redis, clock).acquire(limited, 1) is None
    await limiter(redis, clock).settle(llm_limits.Reservation(key="k", window=int(START // 60), tokens=1), 5)
    assert "not enforced" in caplog.text and "not corrected" in caplog.text


def test_the_estimate_is_the_prompt_by_four_characters_plus_the_answer():
    messages = [{"role": "system", "content": "x" * 400}, {"role": "user", "content": "y" * 40}]
    assert estimate_tokens(messages, 100) == 110 + 2 + 100
    assert estimate_tokens(messages, None) == 110 + 2 + DEFAULT_COMPLETION_TOKENS
    tools = [{"type": "function", "function": {"name": "save", "parameters": {"type": "object"}}}]
    assert estimate_tokens(messages, 100, tools) > estimate_tokens(messages, 100)


# --- through the client ----------------------------------------------------------------------------

def limited_client(answers: Provider, redis, clock: Clock, **settings) -> LLMClient:
    settings = {"kind": "openai_compatible", "model": "test-model", "base_url": "http://llm.test/v1",
                "max_retries": 0, "timeout_seconds": 5} | settings
    return LLMClient(ProviderSettings(**settings), limiter=limiter(redis, clock),
                     http_client=httpx.AsyncClient(transport=httpx.MockTransport(answers)))


def window_key(redis_keys: list[str]) -> str:
    [key] = [k for k in redis_keys if k.startswith(llm_limits.KEY_PREFIX)]
    return key


async def test_the_client_waits_no_longer_than_its_timeout_and_sends_nothing_over_the_limit(redis, clock):
    answers = Provider(completion(prompt=30, completion_tokens=5))
    llm = limited_client(answers, redis, clock, requests_per_minute=2)
    for _ in range(2):
        assert (await llm.chat([{"role": "user", "content": "hi"}])).content == "ok"
    with pytest.raises(LLMUnavailable) as caught:
        await llm.chat([{"role": "user", "content": "hi"}])
    assert caught.value.details["reason"] == "rate_limited" and len(answers.requests) == 2
    # The counted tokens are the provider's usage, not the estimates.
    assert await redis.hgetall(window_key(await redis.keys("*"))) == {"requests": "2", "tokens": "70"}


async def test_a_failed_attempt_counts_as_a_request_but_gives_its_tokens_back(redis, clock, monkeypatch):
    monkeypatch.setattr(llm_retry, "backoff_seconds", lambda attempt, hinted: 0.0)
    answers = Provider(error(500), completion(prompt=30, completion_tokens=5))
    llm = limited_client(answers, redis, clock, tokens_per_minute=100_000, max_retries=1)
    await llm.chat([{"role": "user", "content": "hi"}], max_tokens=50)
    assert await redis.hgetall(window_key(await redis.keys("*"))) == {"requests": "2", "tokens": "35"}


async def test_a_stream_is_counted_once_it_ends_with_its_usage(redis, clock):
    answers = Provider(sse(delta(content="hi"), {"choices": [], "usage": {
        "prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}}))
    llm = limited_client(answers, redis, clock, tokens_per_minute=100_000)
    events = [e async for e in llm.stream([{"role": "user", "content": "hi"}], max_tokens=500)]
    assert events[-1].type == "done"
    assert await redis.hgetall(window_key(await redis.keys("*"))) == {"requests": "1", "tokens": "42"}
