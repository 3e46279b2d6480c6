"""Rate limits (per API key or user, in Redis) and quotas (per organization, in PostgreSQL).

Rate limits use GCRA, a token bucket kept as one timestamp per caller: a full bucket holds a
minute's allowance, so short bursts pass and a steady rate above the limit is refused. The clock is
Redis's own, so several API processes agree.

Quotas on jobs that store memories are checked while holding a per-organization advisory lock, in
the transaction that inserts the job, after the insert: two concurrent submissions can't both squeeze
under the same limit, and each holds the lock only for its count and its commit. Other jobs (agent
turns, tool runs) are counted without it: an organization's chat traffic must not queue on one lock
(20 conversations spent 1.5 s per post waiting there), and a job-count limit may then be overshot by
the submissions racing in the same instant, never by more.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, Uuid, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from core.errors import Forbidden, PermanentJobError, TooManyRequests
from core.redis import get_redis
from core.settings import get_settings
from schemas.enums import JobKind, JobStatus
from schemas.permissions import Principal, Role
from schemas.tables import Job, MemoryCount, Organization

# KEYS[1] bucket; ARGV: period_ms, limit, cost. Returns {allowed, remaining, retry_after_ms, reset_ms}.
_GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
local remaining = math.floor((period - (new_tat - now)) / interval)
return {1, remaining, 0, math.ceil(new_tat - now)}
"""

LIMIT_KEYS = ("rate_limit_per_minute", "max_memories", "jobs_per_minute", "concurrent_jobs", "batch_items")


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int = 0

    def headers(self) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                   "X-RateLimit-Reset": str(self.reset_seconds)}
        if self.retry_after_seconds:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


def role_rate_limit(role: Role | None) -> int:
    """Requests per minute a role gets by default."""
    settings = get_settings()
    return {Role.OWNER: settings.rate_limit_owner, Role.ADMIN: settings.rate_limit_admin,
            Role.MEMBER: settings.rate_limit_member}.get(role, settings.rate_limit_viewer)


async def take(bucket: str, limit: int, *, period_seconds: int = 60, cost: int = 1) -> RateState:
    """Spend `cost` from a bucket of `limit` per `period_seconds`; raises 429 `rate_limited` when empty."""
    allowed, remaining, retry_ms, reset_ms = await get_redis().eval(
        _GCRA, 1, f"agentmem:ratelimit:{bucket}", period_seconds * 1000, limit, cost)
    state = RateState(limit=limit, remaining=int(remaining), reset_seconds=math.ceil(int(reset_ms) / 1000),
                      retry_after_seconds=math.ceil(int(retry_ms) / 1000) if not allowed else 0)
    if not allowed:
        raise TooManyRequests(f"rate limit of {limit} requests per {period_seconds} s reached; retry in "
                              f"{state.retry_after_seconds} s", code="rate_limited",
                              details={"limit": limit, "retry_after": state.retry_after_seconds},
                              headers=state.headers())
    return state


async def organization_limits(session: AsyncSession, org_id: uuid.UUID) -> dict[str, int]:
    """The organization's effective limits: Settings defaults overridden by its own `limits`."""
    return _effective((await session.execute(_overrides(org_id))).scalar_one_or_none())


def _overrides(org_id: uuid.UUID | BindParameter):
    return select(Organization.limits).where(Organization.id == org_id)


def _effective(overrides: dict[str, Any] | None) -> dict[str, int]:
    settings = get_settings()
    defaults: dict[str, Any] = {"max_memories": settings.quota_max_memories,
                                "jobs_per_minute": settings.quota_jobs_per_minute,
                                "concurrent_jobs": settings.quota_concurrent_jobs,
                                "batch_items": settings.quota_batch_items}
    return defaults | (overrides or {})


async def check_rate(principal: Principal) -> RateState:
    """Charge one request to the principal's bucket (per key or per user and organization)."""
    limit = principal.rate_limit or role_rate_limit(principal.role)
    return await take(f"{principal.actor}:{principal.org_id}", limit)


def _quota(code: str, message: str, limit: int, status: int, retry_after: int | None = None) -> Exception:
    details = {"quota": code.removeprefix("quota_"), "limit": limit}
    if status == 429:
        return TooManyRequests(message, code=code, details=details, headers={"Retry-After": str(retry_after or 1)})
    return Forbidden(message, code=code, details=details)


async def check_job_quotas(session: AsyncSession, org_id: uuid.UUID, kind: JobKind, items: int) -> None:
    """Refuse the job just inserted on this session if it takes the organization over a quota (the caller
    then rolls back: nothing stays written); for a job that stores memories, hold the organization's quota
    lock to the commit.

    The job's row is written first and counted with the others, so the lock guards only this count and the
    commit: concurrent writers of one organization wait on each other as briefly as they can (8 clients
    of one organization ran 30% faster without the lock at all, each mostly waiting for it).
    """
    writes = kind in MEMORY_WRITING_JOBS
    lock_and_limits, write_counts, limits_and_counts = _quota_statements()
    params = {"org": org_id, "key": f"quota:{org_id}"}
    if writes:
        # The lock and the limits in one round trip: a batch over `batch_items` is refused before any count.
        overrides = (await session.execute(lock_and_limits, params)).one()[0]
        limits = _effective(overrides)
        _check_batch(limits, items)
        # Under the lock, this statement starts after it was granted: it sees every job and memory committed before.
        running, recent, wait, *usage = (await session.execute(write_counts, params)).one()
    else:
        # Nothing to lock: the organization's limits come with the counts, in the same round trip.
        overrides, running, recent, wait = (await session.execute(limits_and_counts, params)).one()
        limits = _effective(overrides)
        _check_batch(limits, items)
    # The new job is one of `running` and of `recent`: the others must leave room for it.
    if running > limits["concurrent_jobs"]:
        raise _quota("quota_concurrent_jobs", f"{running - 1} jobs are queued or running (limit "
                     f"{limits['concurrent_jobs']}); wait for some to finish", limits["concurrent_jobs"], 429, 5)
    # Retry-After: until the oldest job of the last minute leaves the window.
    if recent > limits["jobs_per_minute"]:
        raise _quota("quota_jobs_per_minute", f"at most {limits['jobs_per_minute']} jobs per minute",
                     limits["jobs_per_minute"], 429, max(1, math.ceil(float(wait or 0))))
    if writes:
        # Extraction, summaries and documents store an unknown number of memories (a summary: one); they are
        # refused up front only if not even one more fits, and checked again when they write. An ingest
        # job's own items are already among those in flight.
        wanted = items if kind is JobKind.INGEST_MEMORIES else 1
        stored, pending = usage
        others = pending - items if kind is JobKind.INGEST_MEMORIES else pending
        if stored + others + wanted > limits["max_memories"]:
            raise _quota("quota_max_memories", f"storing {_more_memories(wanted)} would exceed the organization's "
                         f"{limits['max_memories']} ({stored} stored, {others} in flight)",
                         limits["max_memories"], 403)


@functools.cache
def _quota_statements() -> tuple[Select, Select, Select]:
    """Built once (a request builds none: building these took a third of the quota check's CPU), with the
    parameters `org` and `key` (the lock's): the quota lock with the organization's limits; the counts of a
    memory-writing job; the limits with the counts of any other job.

    Every count in one round trip: jobs queued or running, jobs of the last minute (and when the oldest of
    them leaves the window), and for memory-writing jobs the memories stored and in flight.
    """
    org = bindparam("org", type_=Uuid)
    overrides = _overrides(org).scalar_subquery()
    lock = func.pg_advisory_xact_lock(func.hashtextextended(bindparam("key", type_=String), 0))
    active = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    window = Job.created_at > func.now() - text("interval '1 minute'")
    counts = [select(func.count()).select_from(Job).where(Job.org_id == org, Job.status.in_(active))
              .scalar_subquery(),
              select(func.count()).select_from(Job).where(Job.org_id == org, window).scalar_subquery(),
              select(func.extract("epoch", func.min(Job.created_at) + text("interval '1 minute'") - func.now()))
              .where(Job.org_id == org, window).scalar_subquery()]
    return select(overrides, lock), select(*counts, *_memory_usage_columns(org)), select(overrides, *counts)


def _more_memories(n: int) -> str:
    return f"{n} more memory" if n == 1 else f"{n} more memories"


def _check_batch(limits: dict[str, int], items: int) -> None:
    if items > limits["batch_items"]:
        raise _quota("quota_batch_items", f"a batch may hold at most {limits['batch_items']} items; split it",
                     limits["batch_items"], 403)


MEMORY_WRITING_JOBS = (JobKind.INGEST_MEMORIES, JobKind.EXTRACT_FACTS, JobKind.SUMMARIZE, JobKind.INGEST_SOURCE,
                       JobKind.IMPORT)


def _memory_usage_columns(org_id: uuid.UUID | BindParameter) -> list:
    # The triggers' count (migration 0015), not a count of the rows: this runs on every write, under the lock.
    stored = select(func.coalesce(func.sum(MemoryCount.live), 0)).where(MemoryCount.org_id == org_id)
    # Items of ingest jobs still in flight are reserved too, so concurrent batches can't overshoot.
    pending = (select(func.coalesce(func.sum(Job.progress_total - Job.progress_done), 0))
               .where(Job.org_id == org_id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                      Job.kind == JobKind.INGEST_MEMORIES.value))
    return [stored.scalar_subquery(), pending.scalar_subquery()]


async def _memory_usage(session: AsyncSession, org_id: uuid.UUID) -> tuple[int, int]:
    stored, pending = (await session.execute(select(*_memory_usage_columns(org_id)))).one()
    return stored, pending


async def reserve_memories(session: AsyncSession, org_id: uuid.UUID, count: int) -> None:
    """Fail the calling job (`quota_max_memories`) unless `count` more memories fit; holds the org's lock to commit."""
    if count <= 0:
        return
    limits = await organization_limits(session, org_id)
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"quota:{org_id}"})
    stored, pending = await _memory_usage(session, org_id)
    if stored + pending + count > limits["max_memories"]:
        raise PermanentJobError(f"storing {_more_memories(count)} would exceed the organization's "
                                f"{limits['max_memories']} ({stored} stored, {pending} in flight); nothing was "
                                f"written", code="quota_max_memories",
                                details={"quota": "max_memories", "limit": limits["max_memories"], "wanted": count})
