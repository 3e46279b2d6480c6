"""Figures of the work done in every process (embedding, waiting in a queue, webhook deliveries), kept in Redis for
the API's `/metrics` as core/llm_metrics.py keeps LLM calls: a prometheus_client counter lives in the process that
counts, and the workers count while the API serves the scrape.

One hash, `agentmem:metrics:work`, of running totals:
- `embed_texts|<model>`, `embed_batches|<model>`, `embed_seconds|<model>`: texts embedded, model calls, and the
  seconds those calls took, by embedding model (`core/embedder.py`'s batching embedder, in workers and the API);
- `wait_count|<queue>`, `wait_seconds|<queue>`, `wait_bucket|<queue>|<le>`: jobs a worker started, by queue, and how
  long each waited from being queued (or, a retry, from being due) to being started, as a histogram;
- `webhook|<outcome>`: webhook delivery attempts by outcome (`delivered`; `failed_retrying`: a retry follows;
  `failed`: the delivery gave up).
Labels come from fixed sets (queues, outcomes) or the operator's configuration (model names). A Redis that lost the
hash resets the counters, as a restarted process would; figures that can't be written are logged and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import infrastructure_errors
from core.llm_metrics import label
from core.redis import configured_redis

if TYPE_CHECKING:
    import redis as sync_redis
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

KEY = "agentmem:metrics:work"
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
WEBHOOK_OUTCOMES = ("delivered", "failed_retrying", "failed")


@dataclass
class WorkFigures:
    """What the hash holds, read for one scrape."""

    embed_texts: dict[str, int] = field(default_factory=dict)
    embed_batches: dict[str, int] = field(default_factory=dict)
    embed_seconds: dict[str, float] = field(default_factory=dict)
    # queue → (count, sum of seconds, cumulative counts per bucket of WAIT_BUCKETS)
    waits: dict[str, tuple[int, float, list[int]]] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)


def _bucket(seconds: float) -> str:
    return next((f"{b:g}" for b in WAIT_BUCKETS if seconds <= b), "+Inf")


async def _add(fields: dict[str, int | float], redis: Redis | None) -> None:
    client = redis if redis is not None else configured_redis()
    if client is None:
        return
    try:
        async with client.pipeline(transaction=False) as pipe:
            for name, amount in fields.items():
                if isinstance(amount, float):
                    pipe.hincrbyfloat(KEY, name, amount)
                else:
                    pipe.hincrby(KEY, name, amount)
            await pipe.execute()
    except infrastructure_errors() as exc:
        log.warning("work figures dropped, Redis is unreachable (%s)", type(exc).__name__)


async def record_embedding(model: str, texts: int, seconds: float, *, redis: Redis | None = None) -> None:
    """Add one embedding model call: how many texts, how long."""
    name = label(model)
    await _add({f"embed_texts|{name}": texts, f"embed_batches|{name}": 1, f"embed_seconds|{name}": float(seconds)},
               redis)


async def record_webhook(outcome: str, *, redis: Redis | None = None) -> None:
    """Add one webhook delivery attempt by its outcome (one of WEBHOOK_OUTCOMES)."""
    await _add({f"webhook|{outcome}": 1}, redis)


def record_queue_wait(client: sync_redis.Redis, queue: str, seconds: float) -> None:
    """Add how long a job waited in `queue` before a worker started it (blocking: a worker thread's call)."""
    seconds = max(seconds, 0.0)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(KEY, f"wait_count|{queue}", 1)
        pipe.hincrbyfloat(KEY, f"wait_seconds|{queue}", seconds)
        pipe.hincrby(KEY, f"wait_bucket|{queue}|{_bucket(seconds)}", 1)
        pipe.execute()
    except infrastructure_errors() as exc:
        log.warning("queue wait dropped, Redis is unreachable (%s)", type(exc).__name__)


async def read_figures(redis: Redis | None = None) -> WorkFigures:
    """The counters as they stand (fields of unknown shapes or outcomes are left out)."""
    client = redis if redis is not None else configured_redis()
    figures = WorkFigures()
    if client is None:
        return figures
    raw: dict[str, str] = await client.hgetall(KEY)
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    buckets: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        what, *labels = name.split("|")
        if what == "embed_texts" and len(labels) == 1:
            figures.embed_texts[labels[0]] = int(value)
        elif what == "embed_batches" and len(labels) == 1:
            figures.embed_batches[labels[0]] = int(value)
        elif what == "embed_seconds" and len(labels) == 1:
            figures.embed_seconds[labels[0]] = float(value)
        elif what == "webhook" and len(labels) == 1 and labels[0] in WEBHOOK_OUTCOMES:
            figures.webhooks[labels[0]] = int(value)
        elif what == "wait_count" and len(labels) == 1:
            counts[labels[0]] = int(value)
        elif what == "wait_seconds" and len(labels) == 1:
            sums[labels[0]] = float(value)
        elif what == "wait_bucket" and len(labels) == 2:
            buckets.setdefault(labels[0], {})[labels[1]] = int(value)
    for queue, total in counts.items():
        cumulative, running = [], 0
        for bound in WAIT_BUCKETS:
            running += buckets.get(queue, {}).get(f"{bound:g}", 0)
            cumulative.append(running)
        figures.waits[queue] = (total, sums.get(queue, 0.0), cumulative)
    return figures
