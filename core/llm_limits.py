"""Requests and tokens per minute to an LLM provider, counted in Redis so every worker process shares them.

A provider with `requests_per_minute` or `tokens_per_minute` has one counter hash per minute,
`agentmem:llm:limit:<provider>:<minute>` with fields `requests` and `tokens`, where `<provider>` is
a hash of its name (which carries a hash of its API key), base URL and model, as the in-process
semaphores are keyed. Before each request to the provider, `acquire` counts one request and an
estimate of its tokens (prompt characters / 4, plus `max_tokens` or `DEFAULT_COMPLETION_TOKENS`);
after it, `settle` replaces the estimate with the usage the provider reported (or with nothing, for
a request that failed: the request still counts, its tokens don't).

The counters are incremented first and given back if that went over a limit: plain commands in one
MULTI rather than a script, so they run on the unit tests' fake Redis too. A count given back may
have made a concurrent caller see the window fuller than it was, never emptier: the limit is never
exceeded, at worst a call waits once too often. A request estimated above the whole tokens limit
goes through alone, in a window nothing else used.

A call over a limit waits for the next minute, with some jitter so waiting workers don't return in
one instant, at most the provider's `timeout_seconds` in all; then it fails with `LLMUnavailable`
(`details.reason`: `rate_limited`), a transient error, so its job is retried later. Windows are
fixed minutes of the worker's clock: over a minute that spans two windows up to twice the limit may
pass, as with most providers' own counters.

Without a Redis URL (unit tests) or with Redis unreachable the limits are not enforced, logged: the
provider's own 429s, retried with backoff, still stand behind them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import LLMUnavailable, infrastructure_errors
from core.llm_types import ProviderSettings
from core.redis import configured_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY_PREFIX = "agentmem:llm:limit"
CHARS_PER_TOKEN = 4
# Tokens assumed for an answer whose caller set no `max_tokens`, until the provider's usage corrects it.
DEFAULT_COMPLETION_TOKENS = 512
# Spread of the return of callers that waited for the same window.
JITTER_SECONDS = 1.0


@dataclass(frozen=True)
class Reservation:
    """One request and its estimated tokens, counted in one window."""

    key: str
    window: int
    tokens: int


def estimate_tokens(messages: list[dict], max_tokens: int | None, tools: list[dict] | None = None) -> int:
    """Tokens a chat request may use: its prompt's characters / 4, plus the answer's `max_tokens` or a default."""
    chars = sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) for m in messages)
    chars += len(str(tools)) if tools else 0
    return chars // CHARS_PER_TOKEN + len(messages) + (max_tokens or DEFAULT_COMPLETION_TOKENS)


def _limit_key(provider: ProviderSettings) -> str:
    identity = "\0".join((provider.name, provider.base_url or "", provider.model))
    return f"{KEY_PREFIX}:{hashlib.sha256(identity.encode()).hexdigest()[:24]}"


def _exceeded(provider: ProviderSettings, requests: int, tokens: int, reserved: int) -> str | None:
    if provider.requests_per_minute is not None and requests > provider.requests_per_minute:
        return "requests_per_minute"
    # A request bigger than the whole allowance would never fit: it may go first in an empty window.
    if provider.tokens_per_minute is not None and tokens > provider.tokens_per_minute and tokens > reserved:
        return "tokens_per_minute"
    return None


class RateLimiter:
    """Per-minute limits of providers, in Redis; a provider without limits costs no Redis command."""

    def __init__(self, redis: Callable[[], Redis | None] | None = None, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._redis = redis or (lambda: configured_redis())
        self._clock, self._sleep = clock, sleep

    async def acquire(self, provider: ProviderSettings, tokens: int) -> Reservation | None:
        """Count one request of about `tokens` tokens, waiting for a later minute while this one is full (at
        most the provider's timeout, then LLMUnavailable); None when nothing was counted."""
        if provider.requests_per_minute is None and provider.tokens_per_minute is None:
            return None
        redis = self._redis()
        if redis is None:
            return None
        started = self._clock()
        deadline = started + provider.timeout_seconds
        try:
            while True:
                now = self._clock()
                window = int(now // WINDOW_SECONDS)
                key = f"{_limit_key(provider)}:{window}"
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.hincrby(key, "requests", 1).hincrby(key, "tokens", tokens).expire(key, 2 * WINDOW_SECONDS)
                    requests, used, _ = await pipe.execute()
                limit = _exceeded(provider, int(requests), int(used), tokens)
                if limit is None:
                    return Reservation(key=key, window=window, tokens=tokens)
                async with redis.pipeline(transaction=True) as pipe:
                    await pipe.hincrby(key, "requests", -1).hincrby(key, "tokens", -tokens).execute()
                free_at = (window + 1) * WINDOW_SECONDS
                if free_at > deadline:
                    raise _rate_limited(provider, limit, waited=now - started, free_in=free_at - now)
                await self._sleep(min(free_at + random.uniform(0, JITTER_SECONDS), deadline) - now)
        except infrastructure_errors() as exc:
            log.warning("LLM provider %r: per-minute limits not enforced, Redis is unreachable (%s)",
                        provider.name, type(exc).__name__)
            return None

    async def settle(self, reservation: Reservation | None, used_tokens: int) -> None:
        """Replace a reservation's estimate with the tokens the request used (0 for one that failed)."""
        if reservation is None or used_tokens == reservation.tokens:
            return
        if int(self._clock() // WINDOW_SECONDS) != reservation.window:
            return  # that minute is over: its count no longer limits anyone
        redis = self._redis()
        if redis is None:
            return
        try:
            async with redis.pipeline(transaction=True) as pipe:
                # EXPIRE again: a key that expired in between must not come back without one.
                await pipe.hincrby(reservation.key, "tokens", used_tokens - reservation.tokens) \
                    .expire(reservation.key, 2 * WINDOW_SECONDS).execute()
        except infrastructure_errors() as exc:
            log.warning("LLM token count not corrected, Redis is unreachable (%s)", type(exc).__name__)


def _rate_limited(provider: ProviderSettings, limit: str, *, waited: float, free_in: float) -> LLMUnavailable:
    value = provider.requests_per_minute if limit == "requests_per_minute" else provider.tokens_per_minute
    what = "requests" if limit == "requests_per_minute" else "tokens"
    return LLMUnavailable(
        f"LLM provider {provider.name!r} ({provider.model}) is at its limit of {value} {what} per minute "
        f"(waited {waited:.1f} s, at most its timeout of {provider.timeout_seconds:g} s); the job is retried later",
        details={"reason": "rate_limited", "provider": provider.name, "limit": limit, "value": value,
                 "retry_after": round(max(free_in, 0.0), 3)})
