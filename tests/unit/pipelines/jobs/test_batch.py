"""How JobBatcher groups small jobs over time: its claim and its batch run are replaced, its scheduling is real."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from types import SimpleNamespace

import pytest

from pipelines.jobs import batch as batch_module
from pipelines.jobs.batch import JobBatcher
from schemas.enums import JobKind


class RecordingBatcher(JobBatcher):
    """Runs each batch `seconds` long and records which jobs went together and how many ran at once."""

    def __init__(self, seconds: float, **options) -> None:
        super().__init__(JobKind.INGEST_MEMORIES, handler=None, batch_handler=None, max_items=16, **options)
        self.seconds = seconds
        self.batches: list[list[uuid.UUID]] = []
        self.running = 0
        self.most_at_once = 0

    async def _run_together(self, jobs, futures) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.batches.append([job.id for job in jobs])
        await asyncio.sleep(self.seconds)
        self.running -= 1
        for job in jobs:
            self._resolve(futures[job.id], None)


@pytest.fixture
def claims_everything(monkeypatch):
    """Every job asked for is claimed (no database): the claim returns a row-like object per id."""

    @contextlib.asynccontextmanager
    async def session_scope():
        yield SimpleNamespace(commit=_nothing)

    async def claim_many(session, ids, *args, **kwargs):
        return [SimpleNamespace(id=job_id) for job_id in ids]

    monkeypatch.setattr(batch_module, "session_scope", session_scope)
    monkeypatch.setattr(batch_module.rows, "claim_many", claim_many)


async def _nothing() -> None:
    return None


async def test_jobs_arriving_while_a_batch_runs_wait_for_it_and_go_together_in_the_next(claims_everything):
    batcher = RecordingBatcher(seconds=0.2, wait_ms=5)
    first = uuid.uuid4()
    later = [uuid.uuid4() for _ in range(6)]
    runs = [asyncio.ensure_future(batcher.run(first))]
    await asyncio.sleep(0.05)  # the first batch (one job) is running now
    for job_id in later:  # arriving one by one, each well past the 5 ms window of the one before
        runs.append(asyncio.ensure_future(batcher.run(job_id)))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(asyncio.gather(*runs), 5)
    assert batcher.batches == [[first], later]
    assert batcher.most_at_once == 1


async def test_an_idle_batcher_runs_a_lone_job_after_its_window_and_groups_what_shares_one(claims_everything):
    batcher = RecordingBatcher(seconds=0.0, wait_ms=5)
    await asyncio.wait_for(batcher.run(uuid.uuid4()), 5)  # nothing else comes: the window's end starts it
    ids = [uuid.uuid4() for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(batcher.run(job_id) for job_id in ids)), 5)
    assert batcher.batches[1] == ids  # arrived within one window: one batch


async def test_no_batch_holds_more_than_max_jobs_and_the_rest_follow(claims_everything):
    batcher = RecordingBatcher(seconds=0.05, wait_ms=5, max_jobs=4)
    ids = [uuid.uuid4() for _ in range(10)]
    await asyncio.wait_for(asyncio.gather(*(batcher.run(job_id) for job_id in ids)), 5)
    assert [len(b) for b in batcher.batches] == [4, 4, 2]
    assert [job_id for b in batcher.batches for job_id in b] == ids
    assert batcher.most_at_once == 1
