"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.routing import CheckedRoute
from core import queue, work_metrics
from core.db import ping_database, session_scope
from core.errors import infrastructure_errors
from core.llm_metrics import read_figures
from core.metrics import JOB_DURATION_BUCKETS, SnapshotCollector, render
from core.queue import WORKERS_KEY
from core.redis import get_redis
from core.settings import get_settings
from pipelines.jobs import rows as jobs

router = APIRouter(route_class=CheckedRoute, tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    """The API process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is down or no worker was seen recently"}})
async def readyz() -> JSONResponse:
    """Ready to serve: the database and Redis answer, and at least one worker was seen recently."""
    checks: dict[str, dict] = {}
    try:
        async with asyncio.timeout(3):
            await ping_database()  # not through the requests' pool: busy is not down
        checks["database"] = {"ok": True}
    except (TimeoutError, *infrastructure_errors()) as exc:  # a hanging database is not ready either
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        async with asyncio.timeout(3):
            seen = await get_redis().zcount(WORKERS_KEY, time.time() - get_settings().worker_seen_seconds, "+inf")
        checks["redis"] = {"ok": True}
        checks["workers"] = {"ok": seen > 0, "seen": seen}
    except (TimeoutError, *infrastructure_errors()) as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        checks["workers"] = {"ok": False, "seen": None}
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


DURATIONS_SQL = text(
    "SELECT kind, status, count(*), coalesce(sum(d), 0), "
    + ", ".join(f"count(*) FILTER (WHERE d <= {b})" for b in JOB_DURATION_BUCKETS)
    + " FROM (SELECT kind, status, extract(epoch FROM finished_at - started_at) AS d FROM jobs"
      " WHERE finished_at IS NOT NULL AND started_at IS NOT NULL) t GROUP BY kind, status")


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus exposition: request latency by route, open event streams, jobs by kind and status, job duration,
    queue depth, age of the oldest waiting message and wait before start, LLM calls by provider and model (count,
    duration, tokens and cost), embedding throughput by model, and webhook deliveries by outcome (from every
    process)."""
    async with session_scope() as session:
        counts = await jobs.counts_by_kind_status(session)
        durations = [(r[0], r[1], r[2], float(r[3]), list(r[4:])) for r in await session.execute(DURATIONS_SQL)]
    depths = await asyncio.to_thread(queue.queue_depths)
    ages = await asyncio.to_thread(queue.queue_ages)
    body = render(SnapshotCollector(counts, durations, depths, await read_figures(), await work_metrics.read_figures(),
                                    ages))
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
