"""Small jobs of one kind run together: one claim, one handler call, one write-and-finish per batch.

A job of one memory costs far more in its claim, its writes, its finish and its model call than in
its own work. Messages for small jobs that reach a worker process within a few milliseconds of each
other are therefore claimed in one UPDATE, handled by one `BatchHandler` call (one model call, one
transaction that stores every job's rows and moves each job to `succeeded` with its own result),
and announced per job. One batch runs at a time per process and kind: what arrives meanwhile waits
for it and goes in the next, so batches grow with the load instead of the work splitting into ever
more concurrent batches of one (at 8 one-memory writers, most "batches" held a single job). Each job
keeps its row, its events and its message. Should the batch fail for a reason every job shares (the
database, the embedding endpoint unavailable), each job is retried as it would be alone; for any
other reason (an input the model refuses, a bug), every job of it runs again alone through
`run_claimed`, so each ends with its own outcome, never a neighbour's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.db import session_scope
from core.errors import TransientJobError, UpstreamUnavailable, infrastructure_errors
from core.settings import get_settings
from pipelines.jobs import lifecycle, rows
from pipelines.jobs.events import publish_events
from pipelines.jobs.runner import Handler, retry_or_fail, run_claimed, run_job, worker_name
from schemas.enums import EventType, JobKind
from schemas.tables import Job

log = logging.getLogger(__name__)

# Does the work of several claimed jobs in the caller's transaction (flush, no commit); job id -> result.
BatchHandler = Callable[[list[Job], AsyncSession], Awaitable[dict[uuid.UUID, dict[str, Any]]]]


class JobBatcher:
    """Collect the job ids this process is asked to run for `wait_ms`, then run the small ones as a batch."""

    def __init__(self, kind: JobKind, handler: Handler, batch_handler: BatchHandler, *, max_items: int,
                 wait_ms: float, max_jobs: int = 64, drop_payload_keys: tuple[str, ...] = (),
                 fits: Callable[[Job], bool] = lambda job: True) -> None:
        self.kind = kind
        self.handler = handler
        self.batch_handler = batch_handler
        self.max_items = max_items
        self.wait = wait_ms / 1000
        self.max_jobs = max_jobs
        self.drop_payload_keys = drop_payload_keys
        self.fits = fits
        self._pending: list[tuple[uuid.UUID, asyncio.Future]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a batch is being claimed or run together: the next one waits for it
        self._tasks: set[asyncio.Task] = set()

    async def run(self, job_id: uuid.UUID) -> None:
        """Run the job, with whatever else arrives meanwhile; raises RetryLater as `run_job` does."""
        if self.max_items <= 0:
            await run_job(job_id, self.handler, drop_payload_keys=self.drop_payload_keys)
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): what belonged to the old one is gone
            self._loop, self._pending, self._timer, self._busy = loop, [], None, False
        future: asyncio.Future = loop.create_future()
        self._pending.append((job_id, future))
        if len(self._pending) >= self.max_jobs:
            self._flush()
        elif self._timer is None and not self._busy:  # while busy, the running batch starts the next as it ends
            self._timer = loop.call_later(self.wait, self._flush)
        await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._busy or not self._pending:
            return
        batch, self._pending = self._pending[:self.max_jobs], self._pending[self.max_jobs:]
        self._busy = True
        task = asyncio.ensure_future(self._run_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[tuple[uuid.UUID, asyncio.Future]]) -> None:
        futures: dict[uuid.UUID, list[asyncio.Future]] = {}
        for job_id, future in batch:
            futures.setdefault(job_id, []).append(future)
        solo: asyncio.Future | None = None
        try:
            settings = get_settings()
            try:
                async with session_scope() as session:
                    claimed = await rows.claim_many(session, list(futures), settings.job_lease_seconds,
                                                    worker_name(), kind=self.kind, max_items=self.max_items)
                    await session.commit()
            except infrastructure_errors() as exc:
                log.warning("could not claim a batch of %d jobs (%s); each goes its own way", len(futures), exc)
                claimed = []
            by_id = {job.id: job for job in claimed}
            together = [job for job in claimed if self.fits(job)]
            drop = self.drop_payload_keys
            alone = [self._settle(futures[job_id], run_job(job_id, self.handler, drop_payload_keys=drop))
                     for job_id in futures if job_id not in by_id]  # big jobs, or not claimable: the ordinary way
            alone += [self._settle(futures[job.id], run_claimed(job, self.handler, drop_payload_keys=drop))
                      for job in claimed if not self.fits(job)]
            if alone:  # under way at once, and not holding up the next batch: a big job may run for minutes
                solo = asyncio.gather(*alone)
            if together:
                await self._run_together(together, futures)
        finally:
            self._busy = False
            self._flush()  # what arrived meanwhile, at once
        if solo is not None:
            await solo

    async def _run_together(self, jobs: list[Job], futures: dict[uuid.UUID, list[asyncio.Future]]) -> None:
        # The events a job run alone publishes before its work, every job's in one round trip.
        await publish_events([event for job in jobs for event in (
            (EventType.STARTED, job, {"attempt": job.attempts, "max_attempts": job.max_attempts}),
            (EventType.PROGRESS, job, {"done": 0, "total": job.progress_total, "message": "embedding"}))])
        try:
            async with asyncio.timeout(get_settings().job_time_limit_seconds):
                async with session_scope() as session:
                    results = await self.batch_handler(jobs, session)
                    finished = await rows.succeed_many(session, results, drop_payload_keys=self.drop_payload_keys)
                    await lifecycle.conclude_many(session, finished)
        except (TransientJobError, UpstreamUnavailable, *infrastructure_errors()) as exc:
            # A dependency every job of the batch needs (the database, the embedding endpoint): each retries.
            await asyncio.gather(*(self._settle(futures[job.id], retry_or_fail(job, exc)) for job in jobs))
            return
        except Exception as exc:  # noqa: BLE001 - nothing was committed: each job runs again alone, with its own outcome
            log.info("a batch of %d jobs failed (%s: %s); running them one by one", len(jobs), type(exc).__name__, exc)
            await asyncio.gather(*(self._settle(futures[job.id], run_claimed(
                job, self.handler, drop_payload_keys=self.drop_payload_keys, announce=False)) for job in jobs))
            return
        log.info("%d jobs succeeded together", len(finished), extra={"kind": self.kind.value, "status": "succeeded"})
        for job in jobs:
            self._resolve(futures[job.id], None)

    async def _settle(self, waiting: list[asyncio.Future], work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - RetryLater (and anything else) goes to the job's own actor call
            self._resolve(waiting, exc)
        else:
            self._resolve(waiting, None)

    @staticmethod
    def _resolve(waiting: list[asyncio.Future], exc: BaseException | None) -> None:
        # A message delivered twice in one batch: the first call carries the outcome, the rest just return.
        for n, future in enumerate(waiting):
            if future.done():
                continue
            if exc is not None and n == 0:
                future.set_exception(exc)
            else:
                future.set_result(None)
