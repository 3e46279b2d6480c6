"""The worker process's broker: core.queue's, plus what only a worker needs.

AsyncIO runs the async actors; the model is warmed before the first message; the worker's presence
is recorded for /readyz; each job gets a span when tracing is on. Sending messages needs none of this (core.queue).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import dramatiq
import redis
from dramatiq import Middleware
from dramatiq.middleware import AsyncIO

from core import queue, tracing, work_metrics
from core.embedder import warm_up
from core.queue import WORKERS_KEY, JobBroker
from workers.tracing import JobTracing

log = logging.getLogger(__name__)


class WorkerPresence(Middleware):
    """Record in Redis that this worker process is alive, for /readyz."""

    def __init__(self, client: redis.Redis, interval: float = 5.0) -> None:
        self.client = client
        self.interval = interval
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()

    def after_worker_boot(self, broker, worker) -> None:
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        threading.Thread(target=self._beat, name="presence", daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()
        try:
            self.client.zrem(WORKERS_KEY, self.member)
        except redis.RedisError:
            pass

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.zadd(WORKERS_KEY, {self.member: time.time()})
            except redis.RedisError as exc:
                log.warning("worker presence not recorded: %s", exc)
            self._stop.wait(self.interval)


class ModelWarmup(Middleware):
    """Load the embedding model before the worker takes any message, so no job waits for it and
    /readyz (which wants a worker's presence) turns green only when workers are warm."""

    def before_worker_boot(self, broker, worker) -> None:
        started = time.monotonic()
        warm_up()
        log.info("embedding model ready in %.1f s", time.monotonic() - started)


class QueueWait(Middleware):
    """Count how long each message waited in its queue before this worker started it (core/work_metrics.py)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def before_process_message(self, broker, message) -> None:
        since = max(message.message_timestamp, message.options.get("eta") or 0)
        work_metrics.record_queue_wait(self.client, message.queue_name, (time.time() * 1000 - since) / 1000)


def build_broker() -> JobBroker:
    """The process's broker (core.queue) with what a worker adds: AsyncIO, model warm-up, presence, queue waits,
    and a span per job when the OTEL_* variables turn tracing on (core/tracing.py)."""
    broker = queue.get_broker()
    broker.add_middleware(AsyncIO())
    broker.add_middleware(ModelWarmup())
    broker.add_middleware(WorkerPresence(broker.client))
    broker.add_middleware(QueueWait(broker.client))
    if tracing.setup_tracing("agentmem-worker"):
        broker.add_middleware(JobTracing())
    return broker


broker = build_broker()
dramatiq.set_broker(broker)
