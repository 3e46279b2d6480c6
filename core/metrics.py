"""Prometheus metrics: request latency and open streams observed in-process; job figures read from the database,
queue depths and ages from the broker, and LLM call and work figures (embedding, queue waits, webhook deliveries)
from Redis (core/llm_metrics.py, core/work_metrics.py: the workers do the work), at scrape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from core.llm_metrics import DURATION_BUCKETS as LLM_DURATION_BUCKETS
from core.work_metrics import WAIT_BUCKETS

if TYPE_CHECKING:
    from core.llm_metrics import LlmFigures
    from core.work_metrics import WorkFigures

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_LATENCY = Histogram(
    "agentmem_http_request_duration_seconds", "HTTP request latency by route template.",
    ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

OPEN_STREAMS = Gauge("agentmem_open_streams", "Event streams open on this process, by transport (sse, websocket).",
                     ["transport"], registry=REGISTRY)
EVENT_HUB_READERS = Gauge("agentmem_event_hub_readers", "Redis stream readers open in this process's event hub "
                          "(one per stream key with followers).", registry=REGISTRY)
EVENT_HUB_FOLLOWERS = Gauge("agentmem_event_hub_followers", "Followers of event streams in this process (SSE "
                            "responses, WebSocket subscriptions, OpenAI-style streams).", registry=REGISTRY)
EVENT_FOLLOWER_DETACHMENTS = Counter("agentmem_event_follower_detachments", "Followers that fell a whole buffer "
                                     "behind and went on reading Redis themselves.", registry=REGISTRY)
API_KEY_LOOKUPS = Counter("agentmem_api_key_lookups", "API keys presented to this process, by where they were "
                          "found: `cache` or `database` (pipelines/accounts/key_cache.py).", ["source"],
                          registry=REGISTRY)
API_KEY_CACHE_LISTENING = Gauge("agentmem_api_key_cache_listening", "1 while this process hears of changes to "
                                "API keys (PostgreSQL LISTEN) and so may cache them.", registry=REGISTRY)

JOB_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class SnapshotCollector:
    """Job counts, durations, queue depths and ages, LLM call and work figures gathered for one scrape (every process
    sees the same truth)."""

    def __init__(self, job_counts: list[tuple[str, str, int]], durations: list[tuple], queue_depths: dict[str, int],
                 llm: LlmFigures | None = None, work: WorkFigures | None = None,
                 queue_ages: dict[str, float] | None = None):
        self.job_counts, self.durations, self.queue_depths, self.llm = job_counts, durations, queue_depths, llm
        self.work, self.queue_ages = work, queue_ages

    def collect(self):
        jobs = GaugeMetricFamily("agentmem_jobs", "Jobs by kind and status.", labels=["kind", "status"])
        for kind, status, count in self.job_counts:
            jobs.add_metric([kind, status], count)
        yield jobs
        hist = HistogramMetricFamily("agentmem_job_duration_seconds", "Run time of finished jobs.",
                                     labels=["kind", "status"])
        for kind, status, total, sum_seconds, cumulative in self.durations:
            buckets = [(str(b), c) for b, c in zip(JOB_DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", total))
            hist.add_metric([kind, status], buckets, sum_seconds)
        yield hist
        depth = GaugeMetricFamily("agentmem_queue_depth", "Messages waiting or delayed in each queue.",
                                  labels=["queue"])
        for queue, count in self.queue_depths.items():
            depth.add_metric([queue], count)
        yield depth
        if self.queue_ages is not None:
            age = GaugeMetricFamily("agentmem_queue_oldest_message_age_seconds", "How long the first message waiting "
                                    "in each queue has waited since it was sent (a retry: since it was due); 0 when "
                                    "none waits.", labels=["queue"])
            for queue, seconds in sorted(self.queue_ages.items()):
                age.add_metric([queue], seconds)
            yield age
        if self.llm is not None:
            yield from _llm_families(self.llm)
        if self.work is not None:
            yield from _work_families(self.work)


def _llm_families(llm: LlmFigures):
    requests = CounterMetricFamily("agentmem_llm_requests", "LLM calls by kind (chat, stream, embed), outcome "
                                   "(ok, error; rate_limited: held back by the per-minute limits, never sent), "
                                   "provider and model.", labels=["kind", "outcome", "provider", "model"])
    for labels, count in sorted(llm.requests.items()):
        requests.add_metric(list(labels), count)
    yield requests
    hist = HistogramMetricFamily("agentmem_llm_request_duration_seconds", "Duration of LLM calls sent, by kind, "
                                 "outcome, provider and model (a stream: until its last chunk).",
                                 labels=["kind", "outcome", "provider", "model"])
    for labels, (total, sum_seconds, cumulative) in sorted(llm.durations.items()):
        buckets = [(f"{b:g}", c) for b, c in zip(LLM_DURATION_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", total))
        hist.add_metric(list(labels), buckets, sum_seconds)
    yield hist
    tokens = CounterMetricFamily("agentmem_llm_tokens", "Tokens of LLM calls as the providers reported them, by kind, "
                                 "type (prompt, completion), provider and model.",
                                 labels=["kind", "type", "provider", "model"])
    for labels, count in sorted(llm.tokens.items()):
        tokens.add_metric(list(labels), count)
    yield tokens
    cost = CounterMetricFamily("agentmem_llm_cost_usd", "US dollars spent on LLM calls, at the prices of their LLM "
                               "configs (calls without prices count 0), by provider and model.",
                               labels=["provider", "model"])
    for labels, dollars in sorted(llm.cost_usd.items()):
        cost.add_metric(list(labels), dollars)
    yield cost


def _work_families(work: WorkFigures):
    texts = CounterMetricFamily("agentmem_embedded_texts", "Texts embedded, by embedding model (every process).",
                                labels=["model"])
    batches = CounterMetricFamily("agentmem_embedding_batches", "Embedding model calls (batches), by model.",
                                  labels=["model"])
    seconds = CounterMetricFamily("agentmem_embedding_seconds", "Seconds spent in embedding model calls, by model.",
                                  labels=["model"])
    for model in sorted(work.embed_texts):
        texts.add_metric([model], work.embed_texts[model])
        batches.add_metric([model], work.embed_batches.get(model, 0))
        seconds.add_metric([model], work.embed_seconds.get(model, 0.0))
    yield from (texts, batches, seconds)
    wait = HistogramMetricFamily("agentmem_queue_wait_seconds", "Time from a job's message being sent (a retry: due) "
                                 "to a worker starting it, by queue.", labels=["queue"])
    for queue, (total, sum_seconds, cumulative) in sorted(work.waits.items()):
        buckets = [(f"{b:g}", c) for b, c in zip(WAIT_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", total))
        wait.add_metric([queue], buckets, sum_seconds)
    yield wait
    webhooks = CounterMetricFamily("agentmem_webhook_deliveries", "Webhook delivery attempts by outcome (delivered; "
                                   "failed_retrying: another attempt follows; failed: the delivery gave up).",
                                   labels=["outcome"])
    for outcome, count in sorted(work.webhooks.items()):
        webhooks.add_metric([outcome], count)
    yield webhooks


def render(snapshot: SnapshotCollector) -> bytes:
    """The exposition text: this process's metrics followed by the scrape snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    return generate_latest(REGISTRY) + generate_latest(registry)
