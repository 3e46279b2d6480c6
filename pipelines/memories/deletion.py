"""The `delete_memories` job: soft-delete every live memory of a scope (user, agent and/or run), in batches.

Each batch is one statement that marks up to `export_batch_rows` memories deleted and records each
one's DELETE version, as a single delete does (pipelines/memories/store.py); it commits and reports
progress. The job runs until a batch finds nothing left, so memories stored into the scope while it
runs go too; a redelivered job continues where the last one stopped (deleted rows are not live).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.db import session_scope
from core.settings import get_settings
from pipelines.jobs.runner import JobContext
from pipelines.memories import store
from schemas.tables import Memory

SCOPE_FIELDS = ("user_id", "agent_id", "run_id")


async def count_scope(org_id, scope: dict[str, str]) -> int:
    """Live memories of the organization within `scope` (every given field must match)."""
    query = select(func.count()).select_from(Memory).where(Memory.org_id == org_id, Memory.deleted_at.is_(None))
    for name, value in scope.items():
        query = query.where(getattr(Memory, name) == value)
    async with session_scope() as session:
        return int((await session.execute(query)).scalar_one())


async def delete_memories(ctx: JobContext) -> dict[str, Any]:
    """Soft-delete the scope's memories batch by batch; how many this run deleted."""
    job = ctx.job
    scope = {k: job.payload[k] for k in SCOPE_FIELDS if job.payload.get(k) is not None}
    total = await count_scope(job.org_id, scope)
    deleted = 0
    await ctx.progress(0, total, "counted")
    while True:
        async with session_scope() as session:
            batch = await store.soft_delete_scope_batch(
                session, job.org_id, user_id=scope.get("user_id"), agent_id=scope.get("agent_id"),
                run_id=scope.get("run_id"), limit=get_settings().export_batch_rows, job_id=job.id, actor=job.actor,
                meta={"source": "delete_memories", "request_id": job.request_id})
            await session.commit()
        if batch == 0:
            break
        deleted += batch
        await ctx.progress(deleted, max(total, deleted), "deleting")
    return {"scope": scope, "deleted": deleted}
