"""pipelines/accounts/limits.py without Redis or a database: header rendering, role defaults, quota refusals."""

from __future__ import annotations

import uuid

import pytest

from core.errors import Forbidden, TooManyRequests
from pipelines.accounts import limits
from pipelines.accounts.limits import RateState
from schemas.enums import JobKind
from schemas.permissions import Role

# --- RateState -----------------------------------------------------------------------------------

def test_rate_headers_of_an_allowed_request_have_no_retry_after():
    assert RateState(limit=60, remaining=59, reset_seconds=1).headers() == {
        "X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": "1"}


def test_rate_headers_of_a_refused_request_add_retry_after():
    headers = RateState(limit=5, remaining=0, reset_seconds=60, retry_after_seconds=12).headers()
    assert headers["Retry-After"] == "12" and headers["X-RateLimit-Remaining"] == "0"


# --- role defaults -------------------------------------------------------------------------------

def test_each_role_gets_its_own_default_and_no_role_gets_the_viewers(override_settings):
    override_settings(rate_limit_owner=40, rate_limit_admin=30, rate_limit_member=20, rate_limit_viewer=10)
    assert [limits.role_rate_limit(r) for r in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER, None)] == [
        40, 30, 20, 10, 10]


# --- take: the script's answer, as the API shows it ----------------------------------------------

class ScriptedRedis:
    """Answers EVAL with a fixed GCRA result: [allowed, remaining, retry_after_ms, reset_ms]."""

    def __init__(self, answer: list[int]) -> None:
        self.answer = answer
        self.calls: list[tuple] = []

    async def eval(self, script, numkeys, *args):
        self.calls.append(args)
        return self.answer


async def test_take_reports_the_remaining_budget_and_rounds_reset_up_to_seconds(monkeypatch):
    redis = ScriptedRedis([1, 4, 0, 12001])
    monkeypatch.setattr(limits, "get_redis", lambda: redis)
    state = await limits.take("api_key:k:org", 5)
    assert state == RateState(limit=5, remaining=4, reset_seconds=13, retry_after_seconds=0)
    assert redis.calls == [("agentmem:ratelimit:api_key:k:org", 60_000, 5, 1)]


async def test_take_refuses_with_429_rate_limited_retry_after_and_the_rate_headers(monkeypatch):
    monkeypatch.setattr(limits, "get_redis", lambda: ScriptedRedis([0, 0, 11_200, 60_000]))
    with pytest.raises(TooManyRequests) as refused:
        await limits.take("login:10.0.0.1", 5)
    assert refused.value.code == "rate_limited"
    assert refused.value.details == {"limit": 5, "retry_after": 12}
    assert refused.value.headers == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                     "X-RateLimit-Reset": "60", "Retry-After": "12"}


# --- quotas --------------------------------------------------------------------------------------

class OverridesOnlySession:
    """Answers the first query (the organization's `limits`, and for a memory-writing job the quota lock in
    the same statement) and fails on any other."""

    def __init__(self, overrides: dict[str, int]) -> None:
        self.overrides = overrides
        self.queries = 0

    async def execute(self, *args, **kwargs):
        self.queries += 1
        assert self.queries == 1, "nothing but the organization's limits may be read"
        overrides = self.overrides

        class Result:
            def scalar_one_or_none(self):
                return overrides

            def one(self):
                return overrides, None  # the limits, and pg_advisory_xact_lock's void

        return Result()


async def test_organization_limits_override_the_settings_defaults_one_by_one(override_settings):
    override_settings(quota_max_memories=100, quota_jobs_per_minute=10, quota_concurrent_jobs=3,
                      quota_batch_items=50)
    effective = await limits.organization_limits(OverridesOnlySession({"max_memories": 7}), uuid.uuid4())
    assert effective == {"max_memories": 7, "jobs_per_minute": 10, "concurrent_jobs": 3, "batch_items": 50}


async def test_a_batch_over_batch_items_is_refused_before_any_count():
    session = OverridesOnlySession({"batch_items": 3})
    with pytest.raises(Forbidden) as refused:
        await limits.check_job_quotas(session, uuid.uuid4(), JobKind.INGEST_MEMORIES, 4)
    assert refused.value.code == "quota_batch_items"
    assert refused.value.details == {"quota": "batch_items", "limit": 3}
    assert session.queries == 1
