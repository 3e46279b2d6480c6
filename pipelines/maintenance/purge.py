"""`purge`: expire memories past their `expires_at`, and delete for good what was deleted long enough ago.

1. Expire: a live memory whose `expires_at` has passed (already gone from reads and search) is
   soft-deleted as of its `expires_at`, with a DELETE version in its history (`reason: expired`).
2. Purge: memories, blocks, conversations and agents soft-deleted more than the organization's
   retention ago (its `purge_after_days` limit, else AGENTMEM_PURGE_AFTER_DAYS) are removed with what
   hangs off them: a memory's passages and history, a block's versions and attachments, a conversation's
   messages, an agent's attachments and conversations (with their messages).

Each batch (AGENTMEM_MAINTENANCE_BATCH_SIZE rows) is one short transaction that locks only its own rows
(`FOR UPDATE SKIP LOCKED`: a row someone holds waits for the next run). Nothing done is done twice:
what is left is the checkpoint, and a run with nothing left changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text

from core.db import session_scope
from core.settings import get_settings
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import MaintenanceTask, NoParams
from pipelines.memories import store
from schemas.tables import Memory, Organization

_EXPIRED = text("SELECT id, content, expires_at FROM memories WHERE org_id = :org AND deleted_at IS NULL "
                "AND expires_at <= now() ORDER BY expires_at, id LIMIT :n FOR UPDATE SKIP LOCKED")
_DOOMED = ("SELECT id FROM {table} WHERE org_id = :org AND deleted_at < :cutoff ORDER BY id LIMIT :n "
           "FOR UPDATE SKIP LOCKED")
# What hangs off each kind of row, deleted first (foreign keys), then the rows themselves.
_CHILDREN: dict[str, list[str]] = {
    "blocks": ["DELETE FROM agent_blocks WHERE block_id = ANY(:ids)",
               "DELETE FROM block_versions WHERE block_id = ANY(:ids)"],
    "conversations": ["DELETE FROM messages WHERE conversation_id = ANY(:ids)"],
    "agents": ["DELETE FROM agent_blocks WHERE agent_id = ANY(:ids)",
               "DELETE FROM messages WHERE conversation_id IN "
               "(SELECT id FROM conversations WHERE agent_id = ANY(:ids))",
               "DELETE FROM conversations WHERE agent_id = ANY(:ids)"],
}


async def retention_days(org_id: uuid.UUID) -> int:
    """How long the organization keeps deleted rows: its `purge_after_days` limit, else the service's."""
    async with session_scope() as session:
        limits = (await session.execute(select(Organization.limits).where(Organization.id == org_id))).scalar_one()
    value = (limits or {}).get("purge_after_days")
    return int(value) if value is not None else get_settings().purge_after_days


async def _expire_batch(job, size: int) -> int:
    async with session_scope() as session:
        rows = (await session.execute(_EXPIRED, {"org": job.org_id, "n": size})).all()
        for row in rows:
            await store.soft_delete(session, row.id, org_id=job.org_id, old_content=row.content, job_id=job.id,
                                    actor=job.actor, at=row.expires_at,
                                    meta={"source": "purge", "reason": "expired",
                                          "expires_at": row.expires_at.isoformat()})
        await session.commit()
    return len(rows)


async def _purge_memories(org_id: uuid.UUID, cutoff: datetime, size: int) -> int:
    async with session_scope() as session:
        ids = list((await session.execute(
            select(Memory.id).where(Memory.org_id == org_id, Memory.deleted_at < cutoff).order_by(Memory.id)
            .limit(size).with_for_update(skip_locked=True))).scalars())
        gone = await store.hard_delete(session, ids)
        await session.commit()
    return gone


async def _purge_rows(table: str, org_id: uuid.UUID, cutoff: datetime, size: int) -> int:
    async with session_scope() as session:
        ids = list((await session.execute(text(_DOOMED.format(table=table)),
                                          {"org": org_id, "cutoff": cutoff, "n": size})).scalars())
        if ids:
            for statement in _CHILDREN[table]:
                await session.execute(text(statement), {"ids": ids})
            await session.execute(text(f"DELETE FROM {table} WHERE id = ANY(:ids)"), {"ids": ids})
        await session.commit()
    return len(ids)


async def purge(ctx: JobContext, _: NoParams) -> dict[str, Any]:
    """Expire, then purge each kind in turn, a batch at a time; the counts are the result."""
    settings = get_settings()
    org, size = ctx.job.org_id, settings.maintenance_batch_size
    days = await retention_days(org)
    cutoff = datetime.now(UTC) - timedelta(days=days)
    steps: list[tuple[str, Any]] = [
        ("expired_memories", lambda: _expire_batch(ctx.job, size)),
        ("memories", lambda: _purge_memories(org, cutoff, size)),
        # Conversations before agents: an agent's own go with it, the rest of the deleted ones first.
        *((table, lambda t=table: _purge_rows(t, org, cutoff, size))
          for table in ("blocks", "conversations", "agents")),
    ]
    counts = {name: 0 for name, _ in steps}
    for n, (name, batch) in enumerate(steps):
        while True:
            done = await batch()
            counts[name] += done
            await ctx.progress(n, len(steps), f"{name}: {counts[name]}")
            if done < size:
                break
    await ctx.progress(len(steps), len(steps), "done")
    return {"retention_days": days, "cutoff": cutoff.isoformat(), "purged": counts}


TASK = MaintenanceTask("purge", "Expire memories past their expires_at; delete for good the memories, blocks, "
                                "conversations and agents deleted longer ago than the organization's retention.",
                       purge)
