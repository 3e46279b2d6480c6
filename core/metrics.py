"""Prometheus metrics: request latency observed in-process; job figures read from the database at scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_LATENCY = Histogram(
    "agentmem_http_request_duration_seconds", "HTTP request latency by route template.",
    ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

JOB_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class SnapshotCollector:
    """Job counts, durations and queue depths gathered for one scrape (every process sees the same truth)."""

    def __init__(self, job_counts: list[tuple[str, str, int]], durations: list[tuple], queue_depths: dict[str, int]):
        self.job_counts, self.durations, self.queue_depths = job_counts, durations, queue_depths

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


def render(snapshot: SnapshotCollector) -> bytes:
    """The exposition text: this process's metrics followed by the scrape snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    return generate_latest(REGISTRY) + generate_latest(registry)
