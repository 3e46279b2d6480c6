"""The maintenance scheduler: keeps every job moving toward a terminal state.

Each pass (one scheduler at a time: a pass holds an advisory lock from start to end, on a
connection of its own, while its changes commit one job at a time on another):
- a queued job whose message is not in the broker (a crash between commit and send) is re-sent;
- a running job whose lease expired (its worker died) is re-sent unless the broker still holds its
  message (Dramatiq re-delivers a dead worker's messages itself), or cancelled if cancel was asked;
- an MCP server whose cached tool list is older than `mcp_tools_refresh_seconds` gets an `mcp_test` job;
- the webhook outbox's events become `webhook_delivery` jobs (pipelines/webhooks/outbox.py), and delivery
  log entries past `webhook_log_retention_days` are deleted;
- the default schedules organizations lack are installed, and each due schedule is fired once
  (pipelines/schedules/fire.py: a compare-and-swap on its `next_run_at`, so correctness never rests on
  this lock alone).
Each re-send is also a compare-and-swap on the row as the pass read it, so a job that moved on
meanwhile (picked up, finished, re-sent) is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import text

from core import queue
from core.db import session_scope
from core.errors import infrastructure_errors
from core.settings import get_settings
from pipelines.jobs import lifecycle, rows as jobs
from pipelines.mcp import servers as mcp_servers
from pipelines.schedules import defaults as schedule_defaults, fire
from pipelines.webhooks import outbox as webhook_outbox
from schemas.enums import JobKind, JobStatus

log = logging.getLogger(__name__)

SCHEDULER_LOCK = 7_310_002
DEFAULTS_CHECK_SECONDS = 60.0
_defaults_checked_at = 0.0  # monotonic time of this process's last look for missing default schedules


async def maintain_once() -> dict[str, int]:
    """One maintenance pass; returns what it did (all zeros when another scheduler's pass is running)."""
    settings = get_settings()
    report = {"resent": 0, "cancelled": 0, "in_broker": 0, "mcp_refreshes": 0, "webhook_deliveries": 0,
              "schedules_installed": 0, "schedules_fired": 0, "schedules_skipped": 0}
    async with session_scope() as lock_session:
        # Held until this transaction ends, after the whole pass: commits below happen on `session`.
        locked = (await lock_session.execute(text(f"SELECT pg_try_advisory_xact_lock({SCHEDULER_LOCK})"))).scalar()
        if not locked:
            return report
        async with session_scope() as session:
            for job in await jobs.find_stalled(session, queued_older_than=settings.stale_queued_seconds):
                if job.status == JobStatus.RUNNING and job.cancel_requested:
                    row = await jobs.cancel_abandoned(session, job.id)
                    if row is not None:
                        await lifecycle.conclude(session, row)
                        report["cancelled"] += 1
                    continue
                if await asyncio.to_thread(queue.in_broker, job.kind, job.id):
                    report["in_broker"] += 1
                    continue
                if not await jobs.mark_resent(session, job):
                    continue
                await session.commit()
                await asyncio.to_thread(queue.send, job.kind, job.id)
                log.info("re-sent %s job %s (%s)", job.kind, job.id, job.status)
                report["resent"] += 1
            await session.commit()
            if settings.mcp_tools_refresh_seconds > 0:
                report["mcp_refreshes"] = await refresh_mcp_tools(session, settings.mcp_tools_refresh_seconds)
            report["webhook_deliveries"] = await dispatch_webhooks(session)
            await webhook_outbox.prune_log(session)
            report |= await run_schedules(session)
        await lock_session.commit()
    return report


async def refresh_mcp_tools(session, older_than_seconds: float) -> int:
    """Queue an `mcp_test` job for each MCP server whose tool list is stale; how many were queued."""
    queued = 0
    for server in await mcp_servers.due_for_refresh(session, older_than_seconds):
        # One key per server and cache age: a pass that runs again before the job finishes finds the same job.
        stamp = (server.tools_refreshed_at or server.created_at).isoformat()
        _, created = await lifecycle.submit_scheduled(session, server.org_id, kind=JobKind.MCP_TEST,
                                                      payload={"server_id": str(server.id)},
                                                      key=f"scheduler:mcp-refresh:{server.id}:{stamp}")
        queued += created
    await lifecycle.commit(session)
    if queued:
        log.info("queued %d MCP tool-list refreshes", queued)
    return queued


async def dispatch_webhooks(session, *, max_batches: int = 20) -> int:
    """Turn the webhook outbox into delivery jobs, a batch at a time, up to `max_batches` per pass; jobs queued."""
    queued = 0
    for _ in range(max_batches):
        taken, created = await webhook_outbox.dispatch_outbox(session)
        queued += created
        if taken < webhook_outbox.BATCH:
            break
    return queued


async def run_schedules(session) -> dict[str, int]:
    """Install missing default schedules, then fire the due ones; what was done, for the pass's report."""
    settings = get_settings()
    global _defaults_checked_at
    installed = 0
    # Looking for organizations without their defaults reads every organization: once a minute is plenty.
    if settings.schedule_defaults and time.monotonic() - _defaults_checked_at >= DEFAULTS_CHECK_SECONDS:
        installed = await schedule_defaults.install_defaults(session)
        await session.commit()
        # A full batch: more organizations may lack theirs; look again next pass.
        _defaults_checked_at = time.monotonic() if installed < 500 else 0.0
    fired = await fire.fire_due(session, grace_seconds=settings.schedule_grace_seconds)
    if installed or fired["ran"] or fired["skipped"]:
        log.info("schedules: %d defaults installed, fired %s", installed, fired)
    return {"schedules_installed": installed, "schedules_fired": fired["ran"], "schedules_skipped": fired["skipped"]}


async def run_scheduler(stop: asyncio.Event) -> None:
    """Run maintenance passes every `scheduler_interval_seconds` until `stop` is set."""
    interval = get_settings().scheduler_interval_seconds
    log.info("scheduler running every %.1f s", interval)
    while not stop.is_set():
        try:
            report = await maintain_once()
            if any(report[k] for k in ("resent", "cancelled", "mcp_refreshes", "webhook_deliveries",
                                       "schedules_fired")):
                log.info("maintenance pass: %s", report)
        except infrastructure_errors() as exc:
            log.warning("maintenance pass skipped, infrastructure unavailable: %s", exc)
        except Exception:
            log.exception("maintenance pass failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
