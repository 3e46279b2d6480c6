"""pipelines/accounts/audit.py without a database: what `record` would write (a job's outcome row is SQL over
the jobs table: tests/integration/test_audit.py and test_jobs.py read it)."""

from __future__ import annotations

import uuid

import pytest

from pipelines.accounts import audit


class FakeSession:
    """Collects the values of what a pipeline executes (its INSERT)."""

    def __init__(self) -> None:
        self.executed: list[dict] = []

    async def execute(self, statement, params: dict) -> None:
        self.executed.append(params)


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
