"""Two schedulers at once (two `agentmem up`s, or a deploy's overlap): each stalled job is sent once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from core import queue
from core.db import session_scope
from pipelines.jobs import rows as jobs
from pipelines.memories.store import ingest_payload
from schemas.enums import JobKind
from schemas.memories import MemoryBatchIn
from tests.support.sse import finish
from workers import scheduler


async def _stalled_jobs(org_id, scope: str, n: int) -> list[str]:
    """Committed queued rows with no message, looking a minute old: what a crash after commit leaves."""
    ids = []
    async with session_scope() as session:
        for i in range(n):
            batch = MemoryBatchIn(items=[{"content": f"stalled note {i}"}], user_id=scope)
            job, _ = await jobs.submit(session, org_id=org_id, kind=JobKind.INGEST_MEMORIES,
                                       payload=ingest_payload(batch), total=1, idempotency_key=None,
                                       request_id=None, max_attempts=3)
            ids.append(str(job.id))
        await session.commit()
    return ids


async def test_two_schedulers_running_together_send_each_stalled_job_once(client, scope, db, main_tenant,
                                                                         monkeypatch):
    ids = await _stalled_jobs(main_tenant.org_id, scope, 4)
    # A day old: first in the pass's order (oldest first), whatever earlier tests left stalled.
    await db("UPDATE jobs SET enqueued_at = now() - interval '1 day' WHERE id = ANY(CAST(:ids AS uuid[]))",
             ids=ids)
    sent: Counter[str] = Counter()
    real_send = queue.send

    def slow_send(kind, job_id) -> None:
        # A slow Redis round trip widens the window in which the other scheduler could slip in.
        sent[str(job_id)] += 1
        if str(job_id) in ids:
            time.sleep(0.1)
        real_send(kind, job_id)

    monkeypatch.setattr(queue, "send", slow_send)

    async def scheduler_process(offset: float) -> list[dict[str, int]]:
        await asyncio.sleep(offset)
        reports = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # passes back to back, as two busy schedulers would run
            reports.append(await scheduler.maintain_once())
            await asyncio.sleep(0.01)
        return reports

    first, second = await asyncio.gather(scheduler_process(0.0), scheduler_process(0.05))

    assert {i: sent[i] for i in ids} == {i: 1 for i in ids}, (first, second)
    assert sum(r["resent"] for r in first + second) >= len(ids)
    for job_id in ids:  # and the one message each got was enough
        final = await finish(client, job_id)
        assert final["status"] == "succeeded" and final["attempts"] == 1, final
