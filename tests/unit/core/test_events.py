"""core/events.py over an in-process fake Redis: stream keys, capped and expiring writes, reads."""

from __future__ import annotations

import time
import uuid

import pytest

from core import events
from schemas.enums import EventType


@pytest.fixture
def ids() -> tuple[uuid.UUID, uuid.UUID]:
    return uuid.uuid4(), uuid.uuid4()


async def test_publish_writes_the_event_to_the_job_stream_and_the_org_stream(fake_redis, ids):
    job_id, org_id = ids
    await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id, data={"total": 3})
    [(_, job_fields)] = await fake_redis.xrange(events.job_stream(job_id))
    [(_, org_fields)] = await fake_redis.xrange(events.org_stream(org_id))
    assert job_fields == org_fields
    assert job_fields["type"] == "queued"
    assert job_fields["job_id"] == str(job_id)
    assert job_fields["org_id"] == str(org_id)


async def test_publish_keeps_each_job_on_its_own_stream(fake_redis, ids):
    job_id, org_id = ids
    other_job = uuid.uuid4()
    await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    await events.publish(EventType.QUEUED, job_id=other_job, org_id=org_id)
    assert await fake_redis.xlen(events.job_stream(job_id)) == 1
    assert await fake_redis.xlen(events.job_stream(other_job)) == 1
    assert await fake_redis.xlen(events.org_stream(org_id)) == 2


async def test_publish_many_writes_each_event_to_its_jobs_stream_and_all_to_the_org_stream_in_order(fake_redis, ids):
    first_job, org_id = ids
    second_job = uuid.uuid4()
    await events.publish_many([(EventType.STARTED, first_job, org_id, {"attempt": 1}),
                               (EventType.STARTED, second_job, org_id, {"attempt": 2}),
                               (EventType.SUCCEEDED, first_job, org_id, {"result": {"memories": 1}})])

    async def types(key: str) -> list[tuple[str, str]]:
        return [(f["type"], f["job_id"]) for _, f in await fake_redis.xrange(key)]

    assert await types(events.job_stream(first_job)) == [("started", str(first_job)), ("succeeded", str(first_job))]
    assert await types(events.job_stream(second_job)) == [("started", str(second_job))]
    assert await types(events.org_stream(org_id)) == [("started", str(first_job)), ("started", str(second_job)),
                                                      ("succeeded", str(first_job))]
    assert await fake_redis.ttl(events.job_stream(second_job)) > 0


async def test_publish_returns_the_job_stream_entry_id(fake_redis, ids):
    job_id, org_id = ids
    first = await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    second = await events.publish(EventType.STARTED, job_id=job_id, org_id=org_id)
    entry_ids = [entry_id for entry_id, _ in await fake_redis.xrange(events.job_stream(job_id))]
    assert entry_ids == [first, second]
    assert events.is_stream_id(first)


async def test_publish_caps_each_stream_near_its_maxlen(fake_redis, ids, override_settings):
    job_id, org_id = ids
    override_settings(stream_maxlen_job=5, stream_maxlen_org=8)
    # `MAXLEN ~` trims whole stream nodes: small nodes make the approximate cap visible.
    node_entries = 2
    await fake_redis.config_set("stream-node-max-entries", node_entries)
    for i in range(40):
        await events.publish(EventType.PROGRESS, job_id=job_id, org_id=org_id, data={"done": i})
    job_len = await fake_redis.xlen(events.job_stream(job_id))
    org_len = await fake_redis.xlen(events.org_stream(org_id))
    assert 5 <= job_len <= 5 + node_entries
    assert 8 <= org_len <= 8 + node_entries
    # Trimming drops the oldest entries, never the newest.
    [(entry_id, fields)] = await fake_redis.xrevrange(events.job_stream(job_id), count=1)
    assert events.parse(entry_id, fields).data == {"done": 39}


async def test_publish_sets_an_expiry_on_both_streams(fake_redis, ids, override_settings):
    job_id, org_id = ids
    override_settings(stream_ttl_seconds=600)
    await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    for key in (events.job_stream(job_id), events.org_stream(org_id)):
        assert 0 < await fake_redis.ttl(key) <= 600


async def test_parse_round_trips_a_published_event(fake_redis, ids):
    job_id, org_id = ids
    before = time.time()
    entry_id = await events.publish(EventType.PROGRESS, job_id=job_id, org_id=org_id,
                                    data={"done": 2, "total": 5, "message": "embedding", "ref": uuid.UUID(int=7)})
    [(read_id, fields)] = await fake_redis.xrange(events.job_stream(job_id))
    event = events.parse(read_id, fields)
    assert event.id == entry_id
    assert event.type is EventType.PROGRESS
    assert (event.job_id, event.org_id) == (str(job_id), str(org_id))
    assert event.data == {"done": 2, "total": 5, "message": "embedding", "ref": str(uuid.UUID(int=7))}
    assert before <= event.ts <= time.time()


async def test_publish_without_data_stores_an_empty_object(fake_redis, ids):
    job_id, org_id = ids
    await events.publish(EventType.STARTED, job_id=job_id, org_id=org_id)
    [(entry_id, fields)] = await fake_redis.xrange(events.job_stream(job_id))
    assert events.parse(entry_id, fields).data == {}


async def test_last_id_is_zero_for_a_missing_stream(fake_redis):
    assert await events.last_id(events.job_stream(uuid.uuid4())) == "0-0"


async def test_last_id_is_the_newest_entry(fake_redis, ids):
    job_id, org_id = ids
    await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    newest = await events.publish(EventType.STARTED, job_id=job_id, org_id=org_id)
    assert await events.last_id(events.job_stream(job_id)) == newest


async def test_read_returns_only_events_after_the_position_in_order(fake_redis, ids):
    job_id, org_id = ids
    first = await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    second = await events.publish(EventType.STARTED, job_id=job_id, org_id=org_id)
    third = await events.publish(EventType.SUCCEEDED, job_id=job_id, org_id=org_id)
    key = events.job_stream(job_id)
    got = await events.read({key: first}, block_ms=10)
    assert [(k, e.id, e.type) for k, e in got] == [(key, second, EventType.STARTED),
                                                   (key, third, EventType.SUCCEEDED)]


async def test_read_from_zero_returns_every_event_of_several_streams(fake_redis, ids):
    job_id, org_id = ids
    await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    job_key, org_key = events.job_stream(job_id), events.org_stream(org_id)
    got = await events.read({job_key: "0-0", org_key: "0-0"}, block_ms=10)
    assert sorted(k for k, _ in got) == sorted([job_key, org_key])
    assert {e.type for _, e in got} == {EventType.QUEUED}


async def test_read_returns_nothing_when_no_event_follows_the_position(fake_redis, ids):
    job_id, org_id = ids
    newest = await events.publish(EventType.QUEUED, job_id=job_id, org_id=org_id)
    assert await events.read({events.job_stream(job_id): newest}, block_ms=10) == []


async def test_history_returns_the_newest_events_oldest_first(fake_redis, ids):
    job_id, org_id = ids
    published = [await events.publish(EventType.PROGRESS, job_id=job_id, org_id=org_id, data={"done": i})
                 for i in range(5)]
    history = await events.history(events.job_stream(job_id), count=3)
    assert [e.id for e in history] == published[-3:]
    assert [e.data["done"] for e in history] == [2, 3, 4]


@pytest.mark.parametrize("value", ["0-0", "1-0", "1732250000000-42"])
def test_is_stream_id_accepts_ms_dash_seq(value):
    assert events.is_stream_id(value)


@pytest.mark.parametrize("value", ["abc", "1", "1-2-3", "", "-", "1-", "-0", "a-b", "1-0 ", " 1-0", "1-0\n",
                                   "1" * 21 + "-0"])
def test_is_stream_id_rejects_other_shapes(value):
    assert not events.is_stream_id(value)


def test_stream_keys_are_namespaced_per_job_and_per_organization():
    some_id = uuid.UUID(int=5)
    assert events.job_stream(some_id) == f"agentmem:events:job:{some_id}"
    assert events.org_stream(some_id) == f"agentmem:events:org:{some_id}"
    assert events.job_stream(some_id) != events.org_stream(some_id)
