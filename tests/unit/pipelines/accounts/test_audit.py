"""pipelines/accounts/audit.py without a database: what `record` and `record_job_outcome` would write."""

from __future__ import annotations

import uuid

import pytest

from pipelines.accounts import audit
from schemas.tables import Job


class FakeSession:
    """Collects what a pipeline adds or executes (the values of its INSERT); flushing does nothing."""

    def __init__(self) -> None:
        self.added: list[object] = []
        self.executed: list[dict] = []

    def add(self, row: object) -> None:
        self.added.append(row)

    async def execute(self, statement, params: dict) -> None:
        self.executed.append(params)

    async def flush(self) -> None:
        pass


async def record(**details) -> dict:
    session = FakeSession()
    await audit.record(session, org_id=uuid.uuid4(), actor="api_key:x", action="create_api_key", result="success",
                       details=details)
    [row] = session.executed
    return row


@pytest.mark.parametrize("key", ["password", "new_password", "current_password", "secret", "client_secret",
                                 "token", "refresh_token", "access_token", "api_key", "Authorization",
                                 "X-API-Key-Secret"])
async def test_record_drops_every_detail_whose_name_suggests_a_secret(key):
    row = await record(**{key: "hunter2", "role": "member"})
    assert row["details"] == {"role": "member"}


async def test_record_keeps_ordinary_details_as_given():
    details = {"role": "member", "prefix": "0123456789ab", "items": 3, "is_active": False}
    assert (await record(**details))["details"] == details


async def test_record_without_details_stores_an_empty_object():
    session = FakeSession()
    await audit.record(session, org_id=None, actor="anonymous", action="login", result="failure", status_code=401)
    [row] = session.executed
    assert row["details"] == {} and row["org_id"] is None and row["status_code"] == 401


def job(**fields) -> Job:
    return Job(id=uuid.uuid4(), org_id=uuid.uuid4(), kind="ingest_memories", attempts=1, request_id="req-1",
               **fields)


@pytest.mark.parametrize(("status", "result"), [("succeeded", "success"), ("failed", "failure"),
                                                ("cancelled", "failure")])
async def test_a_job_outcome_is_recorded_for_the_actor_that_submitted_the_job(status, result):
    session = FakeSession()
    finished = job(status=status, actor="api_key:submitter")
    await audit.record_job_outcome(session, finished)
    [row] = session.added
    assert (row.action, row.result, row.actor) == (f"job.{status}", result, "api_key:submitter")
    assert (row.org_id, row.target_type, row.target_id) == (finished.org_id, "job", str(finished.id))
    assert row.request_id == "req-1"


async def test_a_failed_jobs_outcome_carries_its_error_code_and_a_job_without_actor_is_the_systems():
    session = FakeSession()
    await audit.record_job_outcome(session, job(status="failed", actor=None, error_code="embedding_rejected"))
    [row] = session.added
    assert row.actor == "system"
    assert row.details == {"kind": "ingest_memories", "attempts": 1, "error_code": "embedding_rejected"}
