"""`summarize_conversations`: refresh the rolling summary of conversations that went quiet.

A turn folds old messages into the summary only when the context runs short; a conversation that
stopped for `idle_hours` gets its summary extended to all but its last `keep_last` messages now (a
`summarize_conversation` job each), so resuming it or searching it later starts from a current summary.
The job's key is the one turns use (`conversation-summary:<id>:<seq>`): never queued twice for one point.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from core.db import session_scope
from core.errors import Forbidden, TooManyRequests
from pipelines.jobs import lifecycle, rows as job_rows
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import MaintenanceTask
from schemas.enums import JobKind

IDLE_CONVERSATIONS = text("""
    SELECT c.id, c.last_seq - :keep AS upto FROM conversations c
    JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq
    WHERE c.org_id = :org AND c.deleted_at IS NULL AND c.last_seq - :keep > c.summary_upto
      AND m.created_at < now() - make_interval(secs => :idle) AND c.id > :after
    ORDER BY c.id LIMIT :batch""")


class SummarizeConversationsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idle_hours: float = Field(default=6.0, gt=0, le=24 * 365, description="Quiet for this long since its last message.")
    keep_last: int = Field(default=4, ge=0, le=1000, description="Newest messages left out of the summary.")
    max_jobs: int = Field(default=1000, ge=1, le=100_000, description="Summaries queued per run at most.")
    batch_size: int = Field(default=100, ge=1, le=1000, description="Conversations read (and jobs queued) per commit.")


async def summarize_conversations(ctx: JobContext, params: SummarizeConversationsParams) -> dict[str, Any]:
    """Queue a summary job for each idle conversation with messages its summary doesn't cover yet."""
    org: uuid.UUID = ctx.job.org_id
    who = job_rows.job_principal(ctx.job)
    queued, found, refused, after = 0, 0, None, uuid.UUID(int=0)
    while queued < params.max_jobs and refused is None:
        async with session_scope() as session:
            rows = (await session.execute(IDLE_CONVERSATIONS, {
                "org": org, "keep": params.keep_last, "idle": params.idle_hours * 3600, "after": after,
                "batch": params.batch_size})).all()
            if not rows:
                break
            found += len(rows)
            for conversation_id, upto in rows[:params.max_jobs - queued]:
                try:
                    _, created = await lifecycle.submit(
                        session, who, kind=JobKind.SUMMARIZE_CONVERSATION, total=1,
                        payload={"conversation_id": str(conversation_id), "upto_seq": upto},
                        key=f"conversation-summary:{conversation_id}:{upto}")
                except (TooManyRequests, Forbidden) as exc:  # a job quota: what was queued so far stands
                    refused = exc.code
                    break
                queued += created
            after = rows[-1][0]
            await lifecycle.commit(session)
        await ctx.progress(queued, max(queued, found), f"{queued} summaries queued")
    return {"idle_conversations": found, "summaries_queued": queued, "stopped_by": refused}


TASK = MaintenanceTask("summarize_conversations", "Extend the rolling summary of conversations idle for `idle_hours` "
                       "(a summarize_conversation job each).", summarize_conversations, SummarizeConversationsParams)
