"""The only place a Dramatiq broker is built.

Messages carry the job id as their message id, and (unlike stock RedisBroker) that id is also
the message's key in Redis, so the scheduler can ask "is this job's message still in the broker?"
with one HEXISTS before re-sending a stale job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Optional

import dramatiq
import redis
from dramatiq import Message, Middleware
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import AsyncIO

from core.embedder import warm_up
from core.redis import redis_url
from core.settings import get_settings

log = logging.getLogger(__name__)

NAMESPACE = "agentmem:queue"
WORKERS_KEY = "agentmem:workers"


class JobBroker(RedisBroker):
    """RedisBroker whose Redis message id is the Dramatiq message id (the job id)."""

    def enqueue(self, message: Message, *, delay: Optional[int] = None) -> Message:
        queue_name = message.queue_name
        # Safe to reuse: a retry moves to the delay queue (another hash) before the original is acked.
        message = message.copy(options={"redis_message_id": message.message_id})
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self.do_enqueue(queue_name, message.options["redis_message_id"], message.encode())
        self.emit_after("enqueue", message, delay)
        return message

    def has_message(self, queue_name: str, message_id: str, *, overdue_ms: int) -> bool:
        """Whether a message is queued, delayed for retry, or being processed (not yet acked).

        A delayed message more than `overdue_ms` past its time is lost, not held: a worker keeps delayed
        messages in memory and moves each back to its queue when its time comes, but forgets them when
        its Redis connection breaks, while Redis still lists them as that (live) worker's.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(f"{self.namespace}:{queue_name}.msgs", message_id)
        pipe.hget(f"{self.namespace}:{dq_name(queue_name)}.msgs", message_id)
        queued, delayed = pipe.execute()
        if queued:
            return True
        if delayed is None:
            return False
        eta = Message.decode(delayed).options.get("eta")
        return eta is None or eta > current_millis() - overdue_ms

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting or delayed per queue."""
        pipe = self.client.pipeline(transaction=False)
        names = sorted(self.get_declared_queues())
        for name in names:
            pipe.hlen(f"{self.namespace}:{name}.msgs")
        return dict(zip(names, pipe.execute(), strict=True))


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


def build_broker() -> JobBroker:
    """A Redis broker with AsyncIO, worker presence, and timeouts that fail fast during outages."""
    settings = get_settings()
    try:
        url = redis_url()
    except RuntimeError:
        # Importable without configuration (docs, unit tests); any use fails loudly on this host.
        url = "redis://redis-url-not-configured.invalid:6379/0"
    client = redis.Redis.from_url(url, socket_timeout=settings.redis_timeout_seconds,
                                  socket_connect_timeout=settings.redis_timeout_seconds)
    broker = JobBroker(client=client, namespace=NAMESPACE,
                       heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
                       maintenance_chance=settings.broker_maintenance_chance)
    broker.add_middleware(AsyncIO())
    broker.add_middleware(ModelWarmup())
    broker.add_middleware(WorkerPresence(client))
    return broker


broker = build_broker()
dramatiq.set_broker(broker)
