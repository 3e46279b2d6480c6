"""`retention`: delete what is past its retention, in small batches that each commit.

For the job's organization: payloads of jobs finished `retention_job_payload_days` ago are dropped
first (a payload can hold a whole batch of memories), then jobs finished `retention_job_days` ago are
deleted with their event streams, audit rows older than `retention_audit_days` are deleted, and temporary
files an interrupted workspace save left (`.save-*`, older than `retention_temp_file_hours`) are removed.
Platform-wide (a platform schedule): audit rows of no organization, event streams of deleted
organizations and of jobs that no longer exist, and revoked-token entries without an expiry.

Every step finds its next batch afresh (or moves a keyset cursor forward), so a redelivered or cancelled
run simply resumes; no statement locks more than one batch of rows.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from core.db import session_scope
from core.events import PREFIX as EVENTS_PREFIX, job_stream
from core.redis import get_redis
from core.settings import get_settings
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import BOTH, MaintenanceTask, is_platform_run
from pipelines.tools import quota
from pipelines.tools.workspace import workspace_root

TERMINAL = "('succeeded', 'failed', 'cancelled')"
REVOKED_MATCH = "agentmem:revoked:*"


class RetentionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=500, ge=1, le=10_000, description="Rows per statement (and commit).")


def _ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def _drop_payloads(org: uuid.UUID, cutoff: datetime, batch: int) -> int:
    dropped, after = 0, (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
    while True:
        async with session_scope() as session:
            rows = (await session.execute(text(f"""
                WITH page AS (
                    SELECT id, created_at FROM jobs WHERE org_id = :org AND created_at < :cutoff
                    AND (created_at, id) > (:after_at, :after_id) ORDER BY created_at, id LIMIT :batch),
                dropped AS (
                    UPDATE jobs SET payload = '{{}}'::jsonb FROM page WHERE jobs.id = page.id
                    AND jobs.status IN {TERMINAL} AND jobs.finished_at < :cutoff AND jobs.payload <> '{{}}'::jsonb
                    RETURNING jobs.id)
                SELECT (SELECT count(*) FROM dropped), max(created_at),
                       (array_agg(id ORDER BY created_at DESC, id DESC))[1]
                FROM page"""), {"org": org, "cutoff": cutoff, "after_at": after[0], "after_id": after[1],
                                "batch": batch})).one()
            await session.commit()
        dropped += rows[0]
        if rows[1] is None:
            return dropped
        after = (rows[1], rows[2])


async def _delete_jobs(org: uuid.UUID, cutoff: datetime, batch: int) -> int:
    deleted = 0
    while True:
        async with session_scope() as session:
            ids = list((await session.execute(text(f"""
                DELETE FROM jobs WHERE id IN (
                    SELECT j.id FROM jobs j WHERE j.org_id = :org AND j.created_at < :cutoff
                    AND j.status IN {TERMINAL} AND j.finished_at < :cutoff
                    AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id)
                    ORDER BY j.created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
                RETURNING id"""), {"org": org, "cutoff": cutoff, "batch": batch})).scalars())
            await session.commit()
        if ids:
            await get_redis().delete(*(job_stream(i) for i in ids))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted


async def _delete_audit(org: uuid.UUID | None, cutoff: datetime, batch: int) -> int:
    deleted = 0
    where = "org_id IS NULL" if org is None else "org_id = :org"
    while True:
        async with session_scope() as session:
            count = (await session.execute(text(f"""
                DELETE FROM audit_logs WHERE id IN (
                    SELECT id FROM audit_logs WHERE {where} AND created_at < :cutoff LIMIT :batch)"""),
                {"org": org, "cutoff": cutoff, "batch": batch})).rowcount
            await session.commit()
        deleted += count
        if count < batch:
            return deleted


def _remove_temp_files(root: str, older_than: float) -> int:
    """Workspace temporary files (not the quota lock) last changed before `older_than` (epoch seconds)."""
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.startswith(quota.TEMP_PREFIX) or name == quota.LOCK_NAME:
                continue
            path = os.path.join(folder, name)
            try:
                if os.lstat(path).st_mtime < older_than:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


async def _sweep_streams(batch: int) -> dict[str, int]:
    """Event streams of deleted organizations and of jobs that are gone; revoked-token keys with no expiry."""
    redis, found = get_redis(), {"job_streams": 0, "org_streams": 0, "revoked_tokens": 0}
    for kind in ("job", "org"):
        table = "jobs" if kind == "job" else "organizations"
        alive = "" if kind == "job" else " AND deleted_at IS NULL"
        async for keys in _scan(redis, f"{EVENTS_PREFIX}:{kind}:*", batch):
            ids = {k.rsplit(":", 1)[1]: k for k in keys}
            valid = [i for i in ids if _is_uuid(i)]
            async with session_scope() as session:
                live = set((await session.execute(text(
                    f"SELECT CAST(id AS text) FROM {table} WHERE id = ANY(CAST(:ids AS uuid[])){alive}"),
                    {"ids": valid})).scalars())
            gone = [k for i, k in ids.items() if i in valid and i not in live]
            if gone:
                found[f"{kind}_streams"] += await redis.delete(*gone)
    async for keys in _scan(redis, REVOKED_MATCH, batch):
        for key in keys:
            if await redis.ttl(key) == -1:  # no expiry: it would stay for ever
                found["revoked_tokens"] += await redis.delete(key)
    return found


async def _scan(redis: Any, match: str, count: int):
    cursor = 0
    while True:
        cursor, keys = await redis.scan(cursor=cursor, match=match, count=count)
        if keys:
            yield [k.decode() if isinstance(k, bytes) else k for k in keys]
        if cursor == 0:
            return


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def retention(ctx: JobContext, params: RetentionParams) -> dict[str, Any]:
    """Delete what is past its retention for the organization, or platform-wide for a platform run."""
    settings, batch = get_settings(), params.batch_size
    if is_platform_run(ctx):
        await ctx.progress(0, 2, "audit rows of no organization")
        audit = await _delete_audit(None, _ago(settings.retention_audit_days), batch)
        await ctx.progress(1, 2, "event streams and revoked tokens")
        swept = await _sweep_streams(batch)
        await ctx.progress(2, 2, "done")
        return {"scope": "platform", "audit_rows_deleted": audit, **swept}
    org: uuid.UUID = ctx.job.org_id
    await ctx.progress(0, 4, "dropping old job payloads")
    payloads = await _drop_payloads(org, _ago(settings.retention_job_payload_days), batch)
    await ctx.progress(1, 4, "deleting old jobs")
    jobs = await _delete_jobs(org, _ago(settings.retention_job_days), batch)
    await ctx.progress(2, 4, "deleting old audit rows")
    audit = await _delete_audit(org, _ago(settings.retention_audit_days), batch)
    await ctx.progress(3, 4, "removing stale workspace temporary files")
    older_than = time.time() - settings.retention_temp_file_hours * 3600
    temp = await asyncio.to_thread(_remove_temp_files, str(workspace_root(org)), older_than)
    await ctx.progress(4, 4, "done")
    return {"scope": "organization", "job_payloads_dropped": payloads, "jobs_deleted": jobs,
            "audit_rows_deleted": audit, "temp_files_removed": temp}


TASK = MaintenanceTask("retention", "Delete finished jobs (payloads first), audit rows and workspace temporary files "
                       "past their retention; platform-wide, orphaned event streams and revoked-token entries too.",
                       retention, RetentionParams, BOTH)
