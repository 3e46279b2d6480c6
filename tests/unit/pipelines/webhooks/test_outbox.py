"""What events a finished job makes, and what they say (pure: no database)."""

import uuid
from datetime import UTC, datetime

from pipelines.webhooks.outbox import RESULT_MAX_BYTES, event_id, job_events
from schemas.tables import Job


def _job(kind: str, status: str, **fields) -> Job:
    now = datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    return Job(id=uuid.uuid4(), org_id=uuid.uuid4(), kind=kind, status=status, attempts=1, created_at=now,
               finished_at=now, **fields)


def test_a_succeeded_block_rewrite_is_also_block_rewritten():
    block_id = str(uuid.uuid4())
    job = _job("block_rewrite", "succeeded", payload={"block_id": block_id}, result={"version": 3})
    events = {e["type"]: e for e in job_events(job)}
    assert set(events) == {"job.succeeded", "block.rewritten"}
    assert events["block.rewritten"]["data"] == {"block_id": block_id, "job_id": str(job.id), "result": {"version": 3}}
    assert events["job.succeeded"]["timestamp"] == "2026-12-06T18:00:00Z"


def test_a_failed_scheduled_job_is_also_schedule_failed():
    job = _job("maintenance", "failed", payload={"task": "integrity", "schedule_id": "s-1"}, error_code="boom",
               error_message="it broke")
    events = {e["type"]: e for e in job_events(job)}
    assert set(events) == {"job.failed", "schedule.failed"}
    assert events["schedule.failed"]["data"]["schedule_id"] == "s-1"
    assert events["job.failed"]["data"]["error"] == {"code": "boom", "message": "it broke"}
    assert job_events(_job("maintenance", "succeeded", payload={"schedule_id": "s-1"}))[0]["type"] == "job.succeeded"


def test_a_large_result_is_summarized_by_its_keys():
    job = _job("ingest_memories", "succeeded", payload={}, result={"ids": ["x" * 100] * (RESULT_MAX_BYTES // 50)})
    [event] = job_events(job)
    assert event["data"]["result"] == {"truncated": True, "keys": ["ids"]}


def test_event_ids_are_stable_so_a_repeated_pass_makes_the_same_event():
    job = _job("noop", "succeeded", payload={})
    assert job_events(job)[0]["id"] == job_events(job)[0]["id"] == event_id(f"job:{job.id}:job.succeeded")
    assert job_events(job)[0]["id"].startswith("msg_")
