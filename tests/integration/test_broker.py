"""core/queue.py against a real Redis: an idle consumer blocks on its queue's wake-up list (it does not poll),
and an enqueue wakes it."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from core.queue import NAMESPACE, JobBroker, job_message
from core.settings import get_settings
from schemas.enums import JobKind


@pytest.fixture
def broker(services):
    client = redis.Redis.from_url(services.redis_url)
    namespace = f"{NAMESPACE}-test-{uuid.uuid4().hex[:8]}"  # queues of their own: the stack's workers stay out
    made = JobBroker(client=client, namespace=namespace)
    yield made
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)
    client.close()


def counting_fetches(broker: JobBroker) -> list[int]:
    calls: list[int] = []
    fetch = broker.do_fetch

    def counted(*args):
        calls.append(1)
        return fetch(*args)

    broker.do_fetch = counted  # type: ignore[method-assign]
    return calls


def test_an_idle_consumer_blocks_instead_of_polling(broker, monkeypatch):
    monkeypatch.setattr(get_settings(), "worker_idle_wait_ms", 300)
    consumer = broker.consume("agent", prefetch=2, timeout=25)
    fetches = counting_fetches(broker)
    looks = 0
    until = time.monotonic() + 0.9
    while time.monotonic() < until:  # what a worker's consumer thread does while its queue stays empty
        assert next(consumer) is None
        looks += 1
    # The stock consumer would have fetched every 25 ms (about 36 times); this one blocked between looks.
    assert len(fetches) == looks <= 4


def test_an_enqueue_wakes_a_blocked_consumer_which_then_gets_the_message(broker, monkeypatch):
    monkeypatch.setattr(get_settings(), "worker_idle_wait_ms", 4000)
    consumer = broker.consume("agent", prefetch=2, timeout=25)
    job_id = str(uuid.uuid4())
    woke = threading.Event()
    got: list = []

    def consume() -> None:
        got.append(next(consumer))  # blocks: the queue is empty
        woke.set()
        got.append(next(consumer))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and not woke.is_set()  # still waiting, well inside its 4 s
    broker.enqueue(job_message(JobKind.AGENT_TURN, job_id))
    reader.join(3.0)
    assert not reader.is_alive(), "the enqueue did not wake the consumer"
    assert got[0] is None and got[1].message_id == job_id
    consumer.ack(got[1])


def test_a_consumer_with_a_full_prefetch_does_not_block_on_the_wake_up_list(broker, monkeypatch):
    monkeypatch.setattr(get_settings(), "worker_idle_wait_ms", 4000)
    consumer = broker.consume("agent", prefetch=1, timeout=25)
    broker.enqueue(job_message(JobKind.AGENT_TURN, uuid.uuid4()))
    held = next(consumer)
    assert held is not None
    blocked = threading.Event()
    monkeypatch.setattr(broker, "wait_for_work", lambda queue: blocked.set())
    assert next(consumer) is None  # full: a short sleep, so the worker's acks can make room
    assert not blocked.is_set()
    consumer.ack(held)


def test_the_oldest_waiting_message_age_is_since_it_was_sent_or_since_a_retry_was_due(broker):
    from dramatiq.common import current_millis

    sent = job_message(JobKind.INGEST_MEMORIES, uuid.uuid4())
    sent = sent.copy(message_timestamp=current_millis() - 90_000)  # sent a minute and a half ago
    retry = job_message(JobKind.SUMMARIZE, uuid.uuid4())
    retry = retry.copy(message_timestamp=current_millis() - 3_600_000, options={"eta": current_millis() - 30_000})
    broker.enqueue(sent)
    broker.enqueue(retry)
    broker.enqueue(job_message(JobKind.INGEST_MEMORIES, uuid.uuid4()))  # newer, behind the first
    ages = broker.oldest_waiting(["embedding", "llm", "tools"])
    assert 90 <= ages["embedding"] < 3_600
    assert 30 <= ages["llm"] < 3_600  # waiting since due, not since its first attempt was sent
    assert ages["tools"] == 0
