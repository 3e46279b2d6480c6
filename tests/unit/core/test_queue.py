"""core/queue.py: the broker, the parts that need no Lua: the Redis message id is the job id, and the lookup by it."""

from __future__ import annotations

import uuid

import dramatiq
import fakeredis
import pytest
from dramatiq.common import current_millis, dq_name

from core.queue import NAMESPACE, JobBroker

Enqueued = list[tuple[str, str, dramatiq.Message]]


@pytest.fixture
def job_broker(monkeypatch) -> tuple[JobBroker, Enqueued]:
    """A JobBroker on a sync fake Redis whose Lua dispatch (fakeredis has no Lua here) records its arguments."""
    broker = JobBroker(client=fakeredis.FakeRedis(server=fakeredis.FakeServer()), namespace=NAMESPACE)
    enqueued: Enqueued = []
    monkeypatch.setattr(broker, "do_enqueue", lambda queue, redis_id, data: enqueued.append(
        (queue, redis_id, dramatiq.Message.decode(data))))
    return broker, enqueued


def message_for(job_id: str) -> dramatiq.Message:
    return dramatiq.Message(queue_name="embedding", actor_name="embed_memory", args=(job_id,), kwargs={},
                            options={}, message_id=job_id)


def test_enqueue_stores_the_message_under_its_own_id(job_broker):
    broker, enqueued = job_broker
    job_id = str(uuid.uuid4())
    broker.enqueue(message_for(job_id))
    [(queue, redis_id, message)] = enqueued
    assert (queue, redis_id) == ("embedding", job_id)
    assert message.options["redis_message_id"] == job_id


def test_enqueue_with_delay_goes_to_the_delay_queue_under_the_same_id(job_broker):
    broker, enqueued = job_broker
    job_id = str(uuid.uuid4())
    broker.enqueue(message_for(job_id), delay=5_000)
    [(queue, redis_id, message)] = enqueued
    assert (queue, redis_id) == (dq_name("embedding"), job_id)
    assert message.options["eta"] >= current_millis() + 4_000


def delayed_until(job_id: str, eta: int) -> bytes:
    return message_for(job_id).copy(queue_name=dq_name("embedding"), options={"eta": eta}).encode()


def test_has_message_finds_a_queued_or_delayed_message_by_job_id(job_broker):
    broker, _ = job_broker
    queued, delayed, absent = (str(uuid.uuid4()) for _ in range(3))
    # The hashes dramatiq's dispatch.lua keeps messages in: `<namespace>:<queue>.msgs`.
    broker.client.hset(f"{NAMESPACE}:embedding.msgs", queued, b"...")
    broker.client.hset(f"{NAMESPACE}:{dq_name('embedding')}.msgs", delayed,
                       delayed_until(delayed, current_millis() + 5_000))
    assert broker.has_message("embedding", queued, overdue_ms=30_000)
    assert broker.has_message("embedding", delayed, overdue_ms=30_000)
    assert not broker.has_message("embedding", absent, overdue_ms=30_000)


def test_a_delayed_message_long_past_its_time_is_lost_not_held(job_broker):
    broker, _ = job_broker
    late, overdue = str(uuid.uuid4()), str(uuid.uuid4())
    broker.client.hset(f"{NAMESPACE}:{dq_name('embedding')}.msgs", late,
                       delayed_until(late, current_millis() - 10_000))
    broker.client.hset(f"{NAMESPACE}:{dq_name('embedding')}.msgs", overdue,
                       delayed_until(overdue, current_millis() - 60_000))
    assert broker.has_message("embedding", late, overdue_ms=30_000)  # a busy worker may be a little late
    assert not broker.has_message("embedding", overdue, overdue_ms=30_000)


def test_the_broker_follows_the_redis_url_configured_when_it_is_used(monkeypatch):
    # A process may import the workers (building a broker) before it learns which server to use.
    from core import queue

    monkeypatch.setattr(queue, "_broker", None)
    monkeypatch.setattr(queue, "redis_url", lambda: "redis://127.0.0.1:1/0")
    first = queue.get_broker()
    assert queue.get_broker() is first
    monkeypatch.setattr(queue, "redis_url", lambda: "redis://127.0.0.1:2/0")
    second = queue.get_broker()
    assert second is not first
    assert second.client.connection_pool.connection_kwargs["port"] == 2
