"""The job queue as the rest of the system sees it: which queue each job kind goes to, and one
message per job, sent by name.

Anything may send a job's message (the API, the scheduler, a pipeline's outbox) without importing the
actors: a message names its actor (the job kind) and its queue, and carries the job id only, which is
also its message id. Workers declare the actors under the same names (workers/actors.py); a unit test
keeps the two in step. Actor and queue names are wire format: renaming one orphans queued messages.

The message id is also the message's key in Redis (unlike stock RedisBroker), so "is this job's
message still in the broker?" is one HEXISTS before the scheduler re-sends a stale job.

An idle consumer waits on a wake-up list instead of polling: every enqueue pushes a token onto its
queue's list, and idle consumers block on it (BLPOP) for up to `worker_idle_wait_ms`. Stock
RedisBroker polls every `worker_timeout` (25 ms here): eight consumers per worker process (four
queues and their delay queues), 320 fetch scripts a second per idle process, about 8% of a core each.
"""

from __future__ import annotations

import time

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed

from core import tracing
from core.redis import redis_url
from core.settings import get_settings
from schemas.enums import JobKind

NAMESPACE = "agentmem:queue"
WORKERS_KEY = "agentmem:workers"

# Job kind → queue. The actor's name is the job kind itself.
QUEUES: dict[JobKind, str] = {
    JobKind.INGEST_MEMORIES: "embedding",
    JobKind.EMBED_MEMORY: "embedding",
    JobKind.SUMMARIZE: "llm",
    JobKind.EXTRACT_FACTS: "llm",
    JobKind.BLOCK_REWRITE: "llm",
    JobKind.EXECUTE_TOOL: "tools",
    # Turns have a queue of their own: a user waits on each, so a long ingest must not stand in front of one.
    JobKind.AGENT_TURN: "agent",
    JobKind.SUMMARIZE_CONVERSATION: "llm",
    JobKind.NOOP: "bench",
    JobKind.MCP_TEST: "tools",
    JobKind.MCP_CALL: "tools",
    JobKind.INGEST_SOURCE: "embedding",
    JobKind.MAINTENANCE: "maintenance",
    JobKind.EXPORT: "maintenance",
    JobKind.IMPORT: "maintenance",
    JobKind.DELETE_MEMORIES: "maintenance",
    # Deliveries wait on receivers (up to the webhook timeout each): a queue of their own, so a slow receiver
    # holds up other deliveries only.
    JobKind.WEBHOOK_DELIVERY: "webhooks",
}
BENCH_QUEUE = "bench"  # consumed only with AGENTMEM_BENCH_JOBS: no-op jobs and the bare Dramatiq actor beside them


def queue_names() -> list[str]:
    """Every queue of the table, once each: what a worker consumes (the bench queue only when benchmarking)."""
    names = list(dict.fromkeys(QUEUES.values()))
    return names if get_settings().bench_jobs else [n for n in names if n != BENCH_QUEUE]


class WakingConsumer(_RedisConsumer):
    """A Redis consumer that, finding its queue empty, blocks on the queue's wake-up list (not a sleep).

    With its prefetch full it sleeps `timeout` as the stock consumer does: its messages' acks, not an
    enqueue, will make room. A delay queue's consumer waits at most DELAY_QUEUE_WAIT_MS, so a retry
    it holds leaves late by no more than that.
    """

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                if self.outstanding_message_count >= self.prefetch:
                    time.sleep(self.timeout / 1000)
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name,
                                                          self.prefetch - self.outstanding_message_count)
                if not self.message_cache:
                    self.broker.wait_for_work(self.queue_name)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None


DELAY_QUEUE_WAIT_MS = 250
WAKE_TOKENS_KEPT = 256  # tokens nobody waited for are dropped beyond this (each costs a spurious wake-up at most)


class JobBroker(RedisBroker):
    """RedisBroker whose Redis message id is the Dramatiq message id (the job id), and whose idle
    consumers are woken by enqueues rather than polling."""

    @property
    def consumer_class(self):
        return WakingConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakingConsumer:
        """A consumer that, its prefetch full, looks for room every `worker_poll_ms` (not the worker threads'
        `timeout`, which only paces their shutdown checks)."""
        return self.consumer_class(self, queue_name, prefetch, get_settings().worker_poll_ms)

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.wake"

    def wait_for_work(self, queue_name: str) -> None:
        """Block until an enqueue to `queue_name` (or its idle wait ends)."""
        wait_ms = get_settings().worker_idle_wait_ms
        if queue_name.endswith(".DQ"):
            wait_ms = min(wait_ms, DELAY_QUEUE_WAIT_MS)
        self.client.blpop([self.wake_key(queue_name)], timeout=max(wait_ms, 1) / 1000)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        queue_name = message.queue_name
        # Safe to reuse: a retry moves to the delay queue (another hash) before the original is acked.
        message = message.copy(options={"redis_message_id": message.message_id})
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self.do_enqueue(queue_name, message.options["redis_message_id"], message.encode())
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.wake_key(queue_name), 1)
        pipe.ltrim(self.wake_key(queue_name), 0, WAKE_TOKENS_KEPT - 1)
        pipe.execute()
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_commands(self, message: Message) -> list[tuple]:
        """The Redis commands `enqueue` runs for a message (no delay), for a caller that sends them on its own
        connection alongside others: its dispatch script as EVAL, and the wake-up token.

        Call `_max_unpack_size()` once beforehand off the event loop: its first call asks Redis.
        """
        message = message.copy(options={"redis_message_id": message.message_id})
        args = ["enqueue", current_millis(), message.queue_name, self.broker_id, self.heartbeat_timeout,
                self.dead_message_ttl, self._should_do_maintenance("enqueue"), self._max_unpack_size(),
                message.options["redis_message_id"], message.encode()]
        wake = self.wake_key(message.queue_name)
        return [("EVAL", self.scripts["dispatch"].script, 1, self.namespace, *args),
                ("LPUSH", wake, 1), ("LTRIM", wake, 0, WAKE_TOKENS_KEPT - 1)]

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

    def queue_depths(self, names: list[str]) -> dict[str, int]:
        """Messages waiting or delayed in each of the named queues."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hlen(f"{self.namespace}:{name}.msgs")
        return dict(zip(names, pipe.execute(), strict=True))

    def oldest_waiting(self, names: list[str]) -> dict[str, float]:
        """Seconds the first message waiting in each of the named queues has waited since it was sent (a retry:
        since it was due); 0 for a queue with nothing waiting."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.lindex(f"{self.namespace}:{name}", 0)
        heads = dict(zip(names, pipe.execute(), strict=True))
        waiting = [name for name in names if heads[name] is not None]
        pipe = self.client.pipeline(transaction=False)
        for name in waiting:
            pipe.hget(f"{self.namespace}:{name}.msgs", heads[name])
        ages = dict.fromkeys(names, 0.0)
        now = current_millis()
        for name, data in zip(waiting, pipe.execute(), strict=True):
            if data is not None:  # taken by a worker between the two round trips
                message = Message.decode(data)
                since = max(message.message_timestamp, message.options.get("eta") or 0)
                ages[name] = max(now - since, 0) / 1000
        return ages


UNCONFIGURED = "redis://redis-url-not-configured.invalid:6379/0"
_broker: JobBroker | None = None
_broker_url: str | None = None


def get_broker() -> JobBroker:
    """The process's broker for the Redis URL configured now, with timeouts that fail fast during outages.

    Built on first use, and again if the URL changed since (a process imported before it was told
    which server to use: a test run's collection, `agentmem up` before its Valkey started). Senders
    use it as it is; a worker process adds its middleware (workers/broker.py) before it declares the
    actors.
    """
    global _broker, _broker_url
    try:
        url = redis_url()
    except RuntimeError:
        url = UNCONFIGURED  # buildable without configuration (docs, unit tests); any use fails loudly
    if _broker is None or url != _broker_url:
        settings = get_settings()
        client = redis.Redis.from_url(url, socket_timeout=settings.redis_timeout_seconds,
                                      socket_connect_timeout=settings.redis_timeout_seconds)
        _broker = JobBroker(client=client, namespace=NAMESPACE,
                            heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
                            maintenance_chance=settings.broker_maintenance_chance)
        _broker_url = url
    return _broker


def job_message(kind: JobKind | str, job_id: object) -> Message:
    """The message that runs a job: its kind's actor on its kind's queue, the job id as id and only argument, and
    (when tracing) the sender's trace context, which the worker's job span continues (workers/tracing.py)."""
    kind = JobKind(kind)
    carrier = tracing.inject_context()
    options = {tracing.MESSAGE_OPTION: carrier} if carrier else {}
    return Message(queue_name=QUEUES[kind], actor_name=kind.value, args=(str(job_id),), kwargs={}, options=options,
                   message_id=str(job_id))


def send(kind: JobKind | str, job_id: object) -> None:
    """Enqueue the message of a committed job row (blocking: one Redis round trip)."""
    get_broker().enqueue(job_message(kind, job_id))


def send_commands(kind: JobKind | str, job_id: object) -> list[tuple]:
    """The Redis commands that enqueue a committed job's message, to send in one round trip with others
    (pipelines/jobs/lifecycle.py sends them with the jobs' `queued` events). Blocks on first use (see
    `prepare_send`)."""
    return get_broker().enqueue_commands(job_message(kind, job_id))


def prepare_send() -> None:
    """Ask Redis, once per process, what `send_commands` needs to know (blocking: call it off the event loop)."""
    get_broker()._max_unpack_size()


def send_ready() -> bool:
    """Whether `send_commands` can run without a blocking call."""
    return JobBroker._max_unpack_size_val is not None


def in_broker(kind: JobKind | str, job_id: object) -> bool:
    """Whether a job's message is still waiting, delayed (and not overdue), or in a worker's hands."""
    return get_broker().has_message(QUEUES[JobKind(kind)], str(job_id),
                                    overdue_ms=int(get_settings().stale_queued_seconds * 1000))


def queue_depths() -> dict[str, int]:
    """Messages waiting or delayed in each queue of the table."""
    return get_broker().queue_depths(sorted(queue_names()))


def queue_ages() -> dict[str, float]:
    """Seconds the oldest waiting message of each queue of the table has waited (0: none waiting)."""
    return get_broker().oldest_waiting(sorted(queue_names()))
