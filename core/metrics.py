"""Prometheus metrics: request latency observed in-process; job figures read from the database, and LLM call
figures from Redis (core/llm_metrics.py: the workers make the calls), at scrape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from core.llm_metrics import DURATION_BUCKETS as LLM_DURATION_BUCKETS

if TYPE_CHECKING:
    from core.llm_metrics import LlmFigures

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

JOB_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class SnapshotCollector:
    """Job counts, durations, queue depths and LLM call figures gathered for one scrape (every process sees the
    same truth)."""

    def __init__(self, job_counts: list[tuple[str, str, int]], durations: list[tuple], queue_depths: dict[str, int],
                 llm: LlmFigures | None = None):
        self.job_counts, self.durations, self.queue_depths, self.llm = job_counts, durations, queue_depths, llm

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
        if self.llm is not None:
            yield from _llm_families(self.llm)


def _llm_families(llm: LlmFigures):
    requests = CounterMetricFamily("agentmem_llm_requests", "LLM calls by kind (chat, stream, embed) and outcome "
                                   "(ok, error; rate_limited: held back by the per-minute limits, never sent).",
                                   labels=["kind", "outcome"])
    for (kind, outcome), count in sorted(llm.requests.items()):
        requests.add_metric([kind, outcome], count)
    yield requests
    hist = HistogramMetricFamily("agentmem_llm_request_duration_seconds", "Duration of LLM calls sent, by kind and "
                                 "outcome (a stream: until its last chunk).", labels=["kind", "outcome"])
    for (kind, outcome), (total, sum_seconds, cumulative) in sorted(llm.durations.items()):
        buckets = [(f"{b:g}", c) for b, c in zip(LLM_DURATION_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", total))
        hist.add_metric([kind, outcome], buckets, sum_seconds)
    yield hist
    tokens = CounterMetricFamily("agentmem_llm_tokens", "Tokens of LLM calls as the providers reported them, by kind "
                                 "and type (prompt, completion).", labels=["kind", "type"])
    for (kind, token_type), count in sorted(llm.tokens.items()):
        tokens.add_metric([kind, token_type], count)
    yield tokens
    yield CounterMetricFamily("agentmem_llm_cost_usd", "US dollars spent on LLM calls, at the prices of their LLM "
                              "configs (calls without prices count 0).", value=llm.cost_usd)


def render(snapshot: SnapshotCollector) -> bytes:
    """The exposition text: this process's metrics followed by the scrape snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    return generate_latest(REGISTRY) + generate_latest(registry)
