"""From the outbox to deliveries: what happened becomes events, each event a `webhook_delivery` job per
subscribed webhook.

Triggers (migration 0013) add outbox rows in the transaction that makes the event happen, so nothing is
lost when a process dies. A scheduler pass (workers/scheduler.py) takes the rows oldest first, submits
the jobs with an idempotency key per event and webhook, deletes the rows, commits, then sends the
messages: a pass that dies before its commit leaves the rows for the next one, and a job committed
but not sent is re-sent like any stalled job.

Events (Standard Webhooks payload: `{"type", "timestamp", "data"}`, `id` in the `webhook-id` header):
- a job that succeeded or failed: `job.succeeded` / `job.failed`; a succeeded `block_rewrite` is also
  `block.rewritten`, a failed job with a `schedule_id` in its payload also `schedule.failed`;
- memory history rows: `memory.created` / `memory.updated` / `memory.deleted` with up to 1000 ids each.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict
from core.settings import get_settings
from pipelines.jobs import lifecycle
from pipelines.webhooks.hooks import delivery_payload, subscribed
from schemas.enums import JobKind, JobStatus
from schemas.tables import Job, Organization, Webhook

log = logging.getLogger(__name__)

BATCH = 500
# A job's result goes into its event up to this size; a bigger one is summarized by its keys.
RESULT_MAX_BYTES = 4096
_EVENT_IDS = uuid.UUID("5b0f3c52-8f8e-4c55-9f0e-5d1b8f2a7c11")

_TAKE = text("SELECT id, org_id, source, event_type, job_id, data, created_at FROM webhook_outbox "
             "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED")


def event_id(name: str) -> str:
    """The `webhook-id` of an event: derived from what it is about, so a pass run twice makes the same ids."""
    return "msg_" + uuid.uuid5(_EVENT_IDS, name).hex


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _result_summary(result: dict[str, Any] | None) -> Any:
    if result is None or len(json.dumps(result, default=str)) <= RESULT_MAX_BYTES:
        return result
    return {"truncated": True, "keys": sorted(result)[:100]}


def job_data(job: Job) -> dict[str, Any]:
    """What a job event says of its job."""
    error = {"code": job.error_code, "message": job.error_message} if job.status == JobStatus.FAILED.value else None
    return {"id": str(job.id), "kind": job.kind, "status": job.status, "attempts": job.attempts,
            "error": error, "result": _result_summary(job.result), "created_at": _iso(job.created_at),
            "finished_at": _iso(job.finished_at)}


def job_events(job: Job) -> list[dict[str, Any]]:
    """The events of a job that reached `succeeded` or `failed`."""
    data, when = job_data(job), _iso(job.finished_at)
    found = [(f"job.{job.status}", data)]
    if job.kind == JobKind.BLOCK_REWRITE.value and job.status == JobStatus.SUCCEEDED.value:
        found.append(("block.rewritten", {"block_id": job.payload.get("block_id"), "job_id": str(job.id),
                                          "result": data["result"]}))
    if job.status == JobStatus.FAILED.value and job.payload.get("schedule_id"):
        found.append(("schedule.failed", {"schedule_id": str(job.payload["schedule_id"]), "job_id": str(job.id),
                                          "kind": job.kind, "error": data["error"]}))
    return [{"id": event_id(f"job:{job.id}:{kind}"), "type": kind, "timestamp": when, "data": body}
            for kind, body in found]


def memory_event(row: Any) -> dict[str, Any]:
    """The event of one outbox row of memory changes."""
    return {"id": event_id(f"outbox:{row.id}:{row.event_type}"), "type": row.event_type,
            "timestamp": _iso(row.created_at),
            "data": {"memory_ids": row.data.get("memory_ids", []),
                     "job_id": str(row.job_id) if row.job_id else None}}


async def dispatch_outbox(session: AsyncSession, *, limit: int = BATCH) -> tuple[int, int]:
    """Turn up to `limit` outbox rows into delivery jobs, commit and send them; (rows taken, jobs queued)."""
    rows = (await session.execute(_TAKE, {"n": limit})).all()
    if not rows:
        return 0, 0
    hooks: dict[uuid.UUID, list[Webhook]] = defaultdict(list)
    for hook in (await session.execute(select(Webhook).join(Organization, Organization.id == Webhook.org_id).where(
            Webhook.org_id.in_({r.org_id for r in rows}), Webhook.enabled.is_(True),
            Organization.deleted_at.is_(None)))).scalars():
        hooks[hook.org_id].append(hook)
    job_ids = [r.job_id for r in rows if r.source == "job" and r.org_id in hooks]
    jobs = {j.id: j for j in (await session.execute(select(Job).where(Job.id.in_(job_ids)))).scalars()} \
        if job_ids else {}
    max_attempts, queued = get_settings().webhook_max_attempts, 0
    for row in rows:
        if row.source == "job":
            job = jobs.get(row.job_id)
            events = job_events(job) if job is not None else []
        else:
            events = [memory_event(row)]
        for event in events:
            for hook in hooks.get(row.org_id, []):
                if not subscribed(hook, event["type"]):
                    continue
                try:
                    _, created = await lifecycle.submit_scheduled(
                        session, row.org_id, kind=JobKind.WEBHOOK_DELIVERY, payload=delivery_payload(hook.id, event),
                        key=f"webhook:{event['id']}:{hook.id}", max_attempts=max_attempts)
                except Conflict:  # this event went to this webhook already, saying something else: keep the first
                    log.warning("webhook event %s for %s was delivered before with other contents", event["id"],
                                hook.id)
                    continue
                queued += created
    await session.execute(text("DELETE FROM webhook_outbox WHERE id = ANY(:ids)"), {"ids": [r.id for r in rows]})
    await lifecycle.commit(session)
    return len(rows), queued


_PRUNE = text("DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
              "WHERE created_at < now() - make_interval(secs => :seconds) LIMIT :n)")


async def prune_log(session: AsyncSession, *, limit: int = 10_000) -> int:
    """Delete up to `limit` delivery log entries older than `webhook_log_retention_days`, and commit; how many."""
    seconds = get_settings().webhook_log_retention_days * 86_400
    deleted = (await session.execute(_PRUNE, {"seconds": seconds, "n": limit})).rowcount
    await session.commit()
    return deleted
