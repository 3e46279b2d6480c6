"""Run one job: claim the row, keep its lease, report progress, record the outcome, publish events.

Actors call `run_job`; handlers receive a `JobContext` and return the job's result. Handlers must
be idempotent: a redelivered message runs them again on a job that may be partly done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from core.db import autocommit_scope, session_scope
from core.errors import (
    AppError,
    JobCancelled,
    PermanentJobError,
    TransientJobError,
    UpstreamUnavailable,
    infrastructure_errors,
)
from core.llm import Usage
from core.logging import job_id_var, request_id_var
from core.settings import get_settings
from pipelines.jobs import lifecycle, rows as jobs
from pipelines.jobs.events import publish_event
from schemas.enums import EventType, JobStatus
from schemas.tables import Job

log = logging.getLogger(__name__)

Handler = Callable[["JobContext"], Awaitable[dict[str, Any]]]


class RetryLater(Exception):
    """Raised out of `run_job` so the broker retries the message with backoff."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class JobContext:
    """What a handler sees: its job row, progress reporting, the cancellation checkpoint, LLM usage."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.usage = Usage()
        self._last_event = 0.0

    def record_usage(self, usage: Usage) -> None:
        """Add LLM usage to this attempt's total; `LLMClient(provider, on_usage=ctx.record_usage)` does it per call."""
        self.usage.add(usage)

    def usage_total(self) -> dict[str, Any] | None:
        """Usage of earlier attempts plus this one, as stored in `jobs.usage`; None if no LLM was ever called."""
        if self.usage.calls == 0:
            return None
        return Usage.from_dict(self.job.usage).add(self.usage).as_dict()

    async def progress(self, done: int, total: int, message: str | None = None) -> None:
        """Record progress (a checkpoint: raises JobCancelled if cancellation was requested)."""
        async with session_scope() as session:
            cancel = await jobs.record_progress(session, self.job.id, done=done, total=total, message=message,
                                                lease_seconds=get_settings().job_lease_seconds)
            await session.commit()
        if cancel:
            raise JobCancelled()
        now = time.monotonic()
        if done >= total or (now - self._last_event) * 1000 >= get_settings().progress_min_interval_ms:
            self._last_event = now
            await publish_event(EventType.PROGRESS, self.job, {"done": done, "total": total, "message": message})


async def _keep_lease(job_id: uuid.UUID, lease_seconds: float) -> None:
    while True:
        await asyncio.sleep(lease_seconds / 3)
        try:
            async with session_scope() as session:
                alive = await jobs.extend_lease(session, job_id, lease_seconds)
                await session.commit()
        except infrastructure_errors() as exc:
            log.warning("lease renewal failed: %s", exc)
            continue
        if not alive:
            return


async def _finish(job: Job, status: JobStatus, **fields: Any) -> None:
    row = await lifecycle.finish(job.id, status, **fields)
    if row is None:
        log.info("job was no longer running; outcome %s not recorded", status.value)
        return
    duration = (row.finished_at - row.started_at).total_seconds() * 1000 if row.started_at and row.finished_at else None
    log.info("job %s", status.value, extra={"kind": row.kind, "status": status.value, "duration_ms": duration})


async def run_job(job_id: uuid.UUID, handler: Handler, *, drop_payload_keys: tuple[str, ...] = ()) -> None:
    """Run `handler` for the job if it can be claimed; raises RetryLater for the broker on transient failure."""
    settings = get_settings()
    async with autocommit_scope() as session:  # one statement, one round trip
        job = await jobs.claim(session, job_id, settings.job_lease_seconds, worker_name())
    if job is None:
        await settle_unclaimable(job_id)
        return
    await run_claimed(job, handler, drop_payload_keys=drop_payload_keys)


def worker_name() -> str:
    """Who holds a job's lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_claimed(job: Job, handler: Handler, *, drop_payload_keys: tuple[str, ...] = (),
                      announce: bool = True) -> None:
    """Run `handler` for a job this process has claimed and record its outcome; RetryLater on transient failure.

    `announce`: publish `started` (False when the caller already has).
    """
    settings = get_settings()
    job_token, request_token = job_id_var.set(str(job.id)), request_id_var.set(job.request_id)
    lease = asyncio.create_task(_keep_lease(job.id, settings.job_lease_seconds))
    ctx = JobContext(job)
    try:
        log.info("job started", extra={"kind": job.kind, "status": "running"})
        if announce:
            await publish_event(EventType.STARTED, job, {"attempt": job.attempts, "max_attempts": job.max_attempts})
        try:
            async with asyncio.timeout(settings.job_time_limit_seconds):
                result = await handler(ctx)
        except JobCancelled as exc:
            await _finish(job, JobStatus.CANCELLED, error_code="cancelled",
                          error_message="cancelled while running", drop_payload_keys=drop_payload_keys,
                          usage=ctx.usage_total(), **({"result": exc.result} if exc.result is not None else {}))
        except TimeoutError:
            await _finish(job, JobStatus.FAILED, error_code="time_limit_exceeded",
                          error_message=f"the job ran longer than {settings.job_time_limit_seconds:g} s",
                          usage=ctx.usage_total())
        except PermanentJobError as exc:
            await _finish(job, JobStatus.FAILED, error_code=exc.code, error_message=exc.message,
                          usage=ctx.usage_total())
        except (TransientJobError, UpstreamUnavailable, *infrastructure_errors()) as exc:
            await retry_or_fail(job, exc, usage=ctx.usage_total())
        except Exception as exc:  # a bug: fail with a clear code rather than retrying it
            log.exception("job handler crashed")
            await _finish(job, JobStatus.FAILED, error_code="internal_error",
                          error_message=f"{type(exc).__name__}: {exc}", usage=ctx.usage_total())
        else:
            await _finish(job, JobStatus.SUCCEEDED, result=result,
                          drop_payload_keys=drop_payload_keys, usage=ctx.usage_total())
    finally:
        lease.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease
        job_id_var.reset(job_token)
        request_id_var.reset(request_token)


async def retry_or_fail(job: Job, exc: BaseException, *, usage: dict[str, Any] | None = None) -> None:
    code = exc.code if isinstance(exc, AppError) else "infrastructure_unavailable"
    message = exc.message if isinstance(exc, AppError) else f"{type(exc).__name__}: {exc}"
    if job.attempts >= job.max_attempts:
        await _finish(job, JobStatus.FAILED, error_code=code,
                      error_message=f"gave up after {job.attempts} attempts; last error: {message}", usage=usage)
        return
    log.warning("job attempt %d failed, will retry: %s", job.attempts, message)
    async with session_scope() as session:
        # Tokens spent by a failed attempt were still spent: they stay in the job's total.
        row = await jobs.release_for_retry(session, job.id, error_code=code, error_message=message, usage=usage)
        await session.commit()
    if row is not None:
        await publish_event(EventType.RETRYING, row, {"attempt": job.attempts, "max_attempts": job.max_attempts,
                                                 "error": {"code": code, "message": message}})
    raise RetryLater(code, message) from exc


async def settle_unclaimable(job_id: uuid.UUID) -> None:
    """A message for a job we can't claim: finished, cancelled, or alive elsewhere. Nothing to do but log."""
    async with session_scope() as session:
        job = await session.get(Job, job_id)
    if job is None:
        log.warning("message for unknown job %s dropped", job_id)
    else:
        log.info("job %s is %s; message acknowledged without running it", job_id, job.status)
