"""pipelines/jobs/runner.py without a database: what a job context adds up of its LLM usage."""

from __future__ import annotations

import uuid

from core.llm import Usage
from pipelines.jobs.runner import JobContext
from schemas.tables import Job


def job(usage: dict | None = None) -> Job:
    return Job(id=uuid.uuid4(), org_id=uuid.uuid4(), kind="extract_facts", status="running", payload={},
               usage=usage)


def test_a_job_that_calls_no_llm_records_no_usage():
    assert JobContext(job()).usage_total() is None


def test_usage_is_added_to_what_earlier_attempts_recorded():
    ctx = JobContext(job({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "calls": 2}))
    ctx.record_usage(Usage(prompt_tokens=7, completion_tokens=3, calls=1))
    ctx.record_usage(Usage(prompt_tokens=5, completion_tokens=1, calls=1))
    assert ctx.usage == Usage(12, 4, 2)
    assert ctx.usage_total() == {"prompt_tokens": 112, "completion_tokens": 14, "total_tokens": 126, "calls": 4}


def test_recording_copies_the_numbers_so_a_client_reused_later_does_not_count_twice():
    ctx, spent = JobContext(job()), Usage(3, 2, 1)
    ctx.record_usage(spent)
    spent.add(Usage(100, 100, 1))
    assert ctx.usage_total()["calls"] == 1


def test_the_cost_of_priced_calls_adds_up_over_attempts():
    ctx = JobContext(job({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "calls": 1,
                          "cost_usd": 0.25}))
    ctx.record_usage(Usage(prompt_tokens=7, completion_tokens=3, calls=1, cost_usd=0.125))
    assert ctx.usage_total()["cost_usd"] == 0.375
    # Calls without prices leave no cost behind.
    unpriced = JobContext(job())
    unpriced.record_usage(Usage(prompt_tokens=7, completion_tokens=3, calls=1))
    assert "cost_usd" not in unpriced.usage_total()
