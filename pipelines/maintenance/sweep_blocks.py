"""`sweep_blocks`: a `block_rewrite` job for each block past its rewrite threshold that has none pending.

A write past `AGENTMEM_BLOCK_REWRITE_THRESHOLD` (90% of the limit by default) queues a rewrite itself;
this finds the blocks that were left full anyway (a quota refused the job, the job failed, the threshold
was lowered, the block was imported). Blocks that are read-only or whose rewrites are off are left alone.
Each block's job is keyed by its id and version, so a rerun (or a redelivered run) queues nothing twice.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from core.db import session_scope
from core.errors import Forbidden, TooManyRequests
from core.settings import get_settings
from pipelines.blocks.rewrite import STEPS, rewrite_payload
from pipelines.jobs import lifecycle, rows as job_rows
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import MaintenanceTask
from schemas.blocks import RewriteStrategy
from schemas.enums import JobKind
from schemas.tables import Block

FULL_BLOCKS = text("""
    SELECT b.id FROM blocks b
    WHERE b.org_id = :org AND b.deleted_at IS NULL AND NOT b.read_only AND b.rewrite_strategy <> 'off'
      AND length(b.value) > CAST(:threshold AS float8) * b.char_limit AND b.id > :after
      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.org_id = b.org_id AND j.kind = 'block_rewrite'
                      AND j.status IN ('queued', 'running') AND j.payload->>'block_id' = CAST(b.id AS text))
    ORDER BY b.id LIMIT :batch""")


class SweepBlocksParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_jobs: int = Field(default=1000, ge=1, le=100_000, description="Rewrites queued per run at most.")
    batch_size: int = Field(default=100, ge=1, le=1000, description="Blocks read (and jobs queued) per commit.")


async def sweep_blocks(ctx: JobContext, params: SweepBlocksParams) -> dict[str, Any]:
    """Queue a rewrite for each full block without one pending; report how many and why any were not."""
    org: uuid.UUID = ctx.job.org_id
    who = job_rows.job_principal(ctx.job)
    threshold = get_settings().block_rewrite_threshold
    queued, found, refused, after = 0, 0, None, uuid.UUID(int=0)
    while queued < params.max_jobs and refused is None:
        async with session_scope() as session:
            ids = list((await session.execute(FULL_BLOCKS, {"org": org, "threshold": threshold, "after": after,
                                                            "batch": params.batch_size})).scalars())
            if not ids:
                break
            found += len(ids)
            for block_id in ids[:params.max_jobs - queued]:
                block = await session.get(Block, block_id)
                payload = rewrite_payload(block, strategy=RewriteStrategy(block.rewrite_strategy), target_chars=None,
                                          trigger="threshold")
                try:
                    _, created = await lifecycle.submit(session, who, kind=JobKind.BLOCK_REWRITE, payload=payload,
                                                        total=STEPS, key=f"sweep:{block.id}:{block.version}")
                except (TooManyRequests, Forbidden) as exc:  # a job quota: what was queued so far stands
                    refused = exc.code
                    break
                queued += created
            after = ids[-1]
            await lifecycle.commit(session)
        await ctx.progress(queued, max(queued, found), f"{queued} rewrites queued")
    return {"blocks_over_threshold": found, "rewrites_queued": queued, "stopped_by": refused}


TASK = MaintenanceTask("sweep_blocks", "Queue a block_rewrite job for each block past its rewrite threshold that has "
                       "none pending.", sweep_blocks, SweepBlocksParams)
