"""Figures of LLM calls from every process, kept in Redis for the API's `/metrics` (core/metrics.py renders them).

Workers make the calls and the API serves `/metrics`, but a prometheus_client counter lives in the
process that counts. So each call adds its figures to one Redis hash, `agentmem:metrics:llm`, with
HINCRBY / HINCRBYFLOAT in one pipeline, and a scrape reads the hash. Its fields are running totals,
as Prometheus counters are, each ending with the call's provider kind (`openai`, `azure`,
`openai_compatible`, or `local` for the bundled embedding model) and model name:
- `requests|<kind>|<outcome>|<provider>|<model>`: calls by kind (`chat`, `stream`, `embed`) and outcome (`ok`,
  `error`, or `rate_limited`: refused by the per-minute limits, core/llm_limits.py, before being sent);
- `seconds|<kind>|<outcome>|<provider>|<model>` and `bucket|<kind>|<outcome>|<provider>|<model>|<le>`: the sum of
  their durations and how many fell first into each histogram bucket (one field per call; the scrape makes them
  cumulative);
- `tokens|<kind>|<prompt|completion>|<provider>|<model>` and `cost_usd|<provider>|<model>`.
Kinds, outcomes and providers are fixed sets; model names are what the operator and organizations configured
(never an organization's or a provider config's own name), cut to 100 characters. A Redis that lost the hash
resets the counters, which Prometheus's `rate()` takes as it takes a restarted process. Figures that can't be
written are logged and dropped: metrics never fail a call. Fields of an older layout are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import infrastructure_errors
from core.redis import configured_redis

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY = "agentmem:metrics:llm"
KINDS = ("chat", "stream", "embed")
OUTCOMES = ("ok", "error", "rate_limited")
TOKEN_TYPES = ("prompt", "completion")
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class LlmFigures:
    """What the hash holds, read for one scrape."""

    # (kind, outcome, provider, model) → calls
    requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    # (kind, outcome, provider, model) → (count, sum of seconds, cumulative counts per bucket of DURATION_BUCKETS)
    durations: dict[tuple[str, str, str, str], tuple[int, float, list[int]]] = field(default_factory=dict)
    # (kind, type, provider, model) → tokens
    tokens: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    # (provider, model) → US dollars
    cost_usd: dict[tuple[str, str], float] = field(default_factory=dict)


def label(value: str | None) -> str:
    """A provider or model name as a field part and label value: no `|`, at most 100 characters."""
    return (value or "").replace("|", "/").strip()[:100] or "unknown"


def _bucket(seconds: float) -> str:
    return next((f"{b:g}" for b in DURATION_BUCKETS if seconds <= b), "+Inf")


async def record_call(kind: str, outcome: str, seconds: float | None = None, *, provider: str | None = None,
                      model: str | None = None, prompt_tokens: int = 0, completion_tokens: int = 0,
                      cost_usd: float = 0.0, redis: Redis | None = None) -> None:
    """Add one call's figures (its duration unless it was never sent) to the shared counters."""
    client = redis if redis is not None else configured_redis()
    if client is None:
        return
    who = f"{label(provider)}|{label(model)}"
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hincrby(KEY, f"requests|{kind}|{outcome}|{who}", 1)
            if seconds is not None:
                pipe.hincrbyfloat(KEY, f"seconds|{kind}|{outcome}|{who}", seconds)
                pipe.hincrby(KEY, f"bucket|{kind}|{outcome}|{who}|{_bucket(seconds)}", 1)
            for token_type, count in (("prompt", prompt_tokens), ("completion", completion_tokens)):
                if count:
                    pipe.hincrby(KEY, f"tokens|{kind}|{token_type}|{who}", count)
            if cost_usd:
                pipe.hincrbyfloat(KEY, f"cost_usd|{who}", cost_usd)
            await pipe.execute()
    except infrastructure_errors() as exc:
        log.warning("LLM call figures dropped, Redis is unreachable (%s)", type(exc).__name__)


async def read_figures(redis: Redis | None = None) -> LlmFigures:
    """The counters as they stand (fields of unknown kinds, outcomes or types are left out)."""
    client = redis if redis is not None else configured_redis()
    figures = LlmFigures()
    if client is None:
        return figures
    raw: dict[str, str] = await client.hgetall(KEY)
    buckets: dict[tuple[str, str, str, str], dict[str, int]] = {}
    seconds: dict[tuple[str, str, str, str], float] = {}
    for name, value in raw.items():
        what, *labels = name.split("|")
        if what == "cost_usd" and len(labels) == 2:
            figures.cost_usd[(labels[0], labels[1])] = float(value)
        elif what == "tokens" and len(labels) == 4 and labels[0] in KINDS and labels[1] in TOKEN_TYPES:
            figures.tokens[tuple(labels)] = int(value)  # type: ignore[index]
        elif len(labels) < 4 or labels[0] not in KINDS or labels[1] not in OUTCOMES:
            continue
        elif what == "requests" and len(labels) == 4:
            figures.requests[tuple(labels)] = int(value)  # type: ignore[index]
        elif what == "seconds" and len(labels) == 4:
            seconds[tuple(labels)] = float(value)  # type: ignore[index]
        elif what == "bucket" and len(labels) == 5:
            buckets.setdefault(tuple(labels[:4]), {})[labels[4]] = int(value)  # type: ignore[arg-type]
    for labels, counts in buckets.items():
        cumulative, running = [], 0
        for bound in DURATION_BUCKETS:
            running += counts.get(f"{bound:g}", 0)
            cumulative.append(running)
        figures.durations[labels] = (running + counts.get("+Inf", 0), seconds.get(labels, 0.0), cumulative)
    return figures
