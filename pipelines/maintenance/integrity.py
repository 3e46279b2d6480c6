"""`integrity`: count what should not exist in an organization; the counts are the job's result.

Read-only: memories without an embedding, with one of older content or of another model (`reembed`
fixes them), passages of memories that are gone, and jobs that are outside a terminal state past their
lease or long queued.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from core.db import session_scope
from core.embedder import model_identity
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import MaintenanceTask, NoParams

CHECKS: dict[str, str] = {
    "memories_without_embedding":
        "SELECT count(*) FROM memories WHERE org_id = :org AND deleted_at IS NULL AND embedding IS NULL",
    "memories_with_stale_embedding":
        "SELECT count(*) FROM memories WHERE org_id = :org AND deleted_at IS NULL AND embedding IS NOT NULL "
        "AND embedded_hash IS DISTINCT FROM content_hash",
    "memories_embedded_by_another_model":
        "SELECT count(*) FROM memories WHERE org_id = :org AND deleted_at IS NULL AND embedding IS NOT NULL "
        "AND embedding_model IS DISTINCT FROM :model",
    "orphan_passages":
        "SELECT count(*) FROM memory_passages p WHERE p.org_id = :org AND NOT EXISTS "
        "(SELECT 1 FROM memories m WHERE m.id = p.memory_id AND m.deleted_at IS NULL)",
    "jobs_running_past_lease":
        "SELECT count(*) FROM jobs WHERE org_id = :org AND status = 'running' AND lease_expires_at < now()",
    "jobs_queued_over_an_hour":
        "SELECT count(*) FROM jobs WHERE org_id = :org AND status = 'queued' "
        "AND created_at < now() - interval '1 hour'",
}


async def integrity(ctx: JobContext, _: NoParams) -> dict[str, Any]:
    """Run each count; report them and whether all are zero."""
    counts: dict[str, int] = {}
    org: uuid.UUID = ctx.job.org_id
    for done, (name, sql) in enumerate(CHECKS.items()):
        async with session_scope() as session:
            params = {"org": org, "model": model_identity()} if ":model" in sql else {"org": org}
            counts[name] = int((await session.execute(text(sql), params)).scalar_one())
        await ctx.progress(done + 1, len(CHECKS), name)
    return {"counts": counts, "healthy": not any(counts.values())}


TASK = MaintenanceTask("integrity", "Count memories without (current) embeddings, orphaned passages and stuck jobs.",
                       integrity)
