"""Latency: how long a job waits for a worker, and how long an event takes to reach SSE clients.

    python bench/latency.py [--jobs 200] [--interval 0.05] [--clients 100] [--event-jobs 30] [--workers 2]

1. enqueue → start: `--jobs` one-memory jobs POSTed one after another, `--interval` s apart (an idle,
   unbacklogged queue). For each job, the row's `started_at - created_at` (both PostgreSQL `now()`).
2. publish → SSE receive: `--clients` concurrent connections to GET /api/v1/events (the organization's
   stream), then `--event-jobs` one-memory jobs `--event-interval` s apart. Every client parses every
   event; for each (client, event) pair, receive time minus the event's `ts` (time.time() in the
   publishing process, the same machine, so the clocks agree).
Exits non-zero if a job fails, a client misses an event, or anything times out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentmem.sse import aevents  # noqa: E402
from bench.common import (  # noqa: E402
    TERMINAL,
    BenchError,
    JobWatcher,
    System,
    fetch_jobs,
    finish_run,
    machine_load,
    percentile,
    run_against,
    table,
)


def stats_row(label: str, values_s: list[float]) -> list[object]:
    """label, count, p50, p99, max, in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return [label, len(ms), f"{percentile(ms, 50):.1f}", f"{percentile(ms, 99):.1f}", f"{max(ms):.1f}" if ms else "nan"]


async def submit_one(client: httpx.AsyncClient, content: str, user_id: str) -> str:
    """POST one memory; returns its job id."""
    response = await client.post("/api/v1/memories", json={"items": [{"content": content, "user_id": user_id}]})
    if response.status_code != 202:
        raise BenchError(f"POST /api/v1/memories answered {response.status_code}: {response.text[:500]}")
    return response.json()["id"]


async def enqueue_to_start(url: str, headers: dict[str, str], jobs: int, interval: float,
                           timeout: float) -> dict:
    """Submit `jobs` one-memory jobs `interval` s apart; started_at - created_at per job."""
    user_id = f"bench-latency-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        async with JobWatcher(client) as watcher:
            deadline = time.monotonic() + timeout
            job_ids, posted = [], {}
            for i in range(jobs):
                if time.monotonic() > deadline:
                    raise BenchError("timed out while submitting")
                t = time.monotonic()
                job_id = await submit_one(client, f"latency probe {i}: the user likes quiet mornings", user_id)
                job_ids.append(job_id)
                posted[job_id] = t
                await asyncio.sleep(interval)
            await watcher.wait(job_ids, deadline)
            round_trip = [watcher.finished[j][1] - posted[j] for j in job_ids]
        rows = await fetch_jobs(client, job_ids)
    failed = [r for r in rows.values() if r["status"] != "succeeded"]
    if failed:
        raise BenchError(f"{len(failed)} latency job(s) did not succeed, e.g. {failed[0]['id']}: "
                         f"{failed[0]['status']} {failed[0].get('error')}")
    def between(row: dict, a: str, b: str) -> float:
        return (datetime.fromisoformat(row[b]) - datetime.fromisoformat(row[a])).total_seconds()

    waits = [between(r, "created_at", "started_at") for r in rows.values()]
    runs = [between(r, "started_at", "finished_at") for r in rows.values()]
    return {"waits": waits, "runs": runs, "round_trip": round_trip, "jobs": len(job_ids),
            "retried": sum(1 for r in rows.values() if r["attempts"] > 1)}


class SseClient:
    """One connection to the organization's event stream, keeping (event id, job id, type, latency)."""

    def __init__(self, index: int, client: httpx.AsyncClient) -> None:
        self.index = index
        self.client = client
        self.events: list[tuple[str | None, str, str, float]] = []
        self.published: dict[str | None, tuple[str, str, float]] = {}  # event id -> (job id, type, ts)
        self.error: BaseException | None = None
        self.changed = asyncio.Event()

    async def run(self) -> None:
        try:
            async with self.client.stream("GET", "/api/v1/events") as response:
                response.raise_for_status()
                async for sse in aevents(response):
                    received = time.time()  # the blank line ending the event has just been read
                    if sse.event == "error":
                        raise BenchError(f"client {self.index}: the server sent an error event: {sse.data}")
                    payload = sse.json()
                    self.events.append((sse.id, payload["job_id"], sse.event, received - payload["ts"]))
                    self.published[sse.id] = (payload["job_id"], sse.event, payload["ts"])
                    self.changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc

    def terminal_jobs(self, job_ids: set[str]) -> set[str]:
        return {j for _, j, kind, _ in self.events if kind in TERMINAL and j in job_ids}


async def publish_to_receive(url: str, headers: dict[str, str], clients: int, jobs: int, interval: float,
                             connect_wait: float,
                             timeout: float) -> dict:
    """`clients` SSE connections on the org stream; receive time minus publish time of every event."""
    user_id = f"bench-sse-{uuid.uuid4().hex[:8]}"
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    # No read timeout on the streams: an idle stream is silent until the first event.
    stream_http = httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                    timeout=httpx.Timeout(30, read=None, pool=60))
    api_http = httpx.AsyncClient(base_url=url, headers=headers, timeout=30)
    followers = [SseClient(i, stream_http) for i in range(clients)]
    tasks = [asyncio.create_task(f.run()) for f in followers]
    try:
        # The server answers an org stream only when its first event comes, so "connected" can't be
        # observed: give the server time to accept every request and read its stream position.
        await asyncio.sleep(connect_wait)
        early = [f for f in followers if f.error is not None]
        if early:
            raise BenchError(f"{len(early)} SSE client(s) failed to connect, e.g. {early[0].error!r}")
        deadline = time.monotonic() + timeout
        job_ids: list[str] = []
        for i in range(jobs):
            job_ids.append(await submit_one(api_http, f"event probe {i}: the user's cat is called Pixel", user_id))
            await asyncio.sleep(interval)
        wanted = set(job_ids)
        # Done when every client has seen every job's terminal event (or a client died, or time ran out).
        while time.monotonic() < deadline:
            if all(f.error is not None or f.terminal_jobs(wanted) == wanted for f in followers):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # events published after a terminal one (none expected) still count
        rows = await fetch_jobs(api_http, job_ids)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stream_http.aclose()
        await api_http.aclose()

    not_done = [r for r in rows.values() if r["status"] not in TERMINAL]
    failed = [r for r in rows.values() if r["status"] in TERMINAL and r["status"] != "succeeded"]
    # Expected: every distinct event of our jobs that any client saw; each client should have all of them.
    expected = {(eid, j, kind) for f in followers for eid, j, kind, _ in f.events if j in wanted}
    per_client = []
    for f in followers:
        mine = [(eid, j, kind) for eid, j, kind, _ in f.events if j in wanted]
        per_client.append((len(set(mine)), len(mine) - len(set(mine))))
    latencies = [lat for f in followers for _, j, _, lat in f.events if j in wanted]
    by_type: dict[str, list[float]] = defaultdict(list)
    for f in followers:
        for _, j, kind, lat in f.events:
            if j in wanted:
                by_type[kind].append(lat)
    published = {eid: e for f in followers for eid, e in f.published.items() if e[0] in wanted}
    return {"clients": clients, "jobs": len(job_ids), "timeline": job_timeline(published),
            "not_done": len(not_done), "failed": len(failed),
            "failed_examples": [(r["id"], r["status"], r.get("error")) for r in failed[:3]],
            "expected_per_client": len(expected), "expected_by_type": Counter(kind for _, _, kind in expected),
            "received_min": min(c for c, _ in per_client), "received_max": max(c for c, _ in per_client),
            "clients_complete": sum(1 for c, _ in per_client if c == len(expected)),
            "duplicates": sum(d for _, d in per_client),
            "client_errors": [repr(f.error)[:200] for f in followers if f.error is not None],
            "latencies": latencies, "by_type": dict(by_type)}


PHASES = ("queued → started", "started → first progress", "first → last progress (embed, insert)",
          "last progress → succeeded")


def job_timeline(published: dict[str | None, tuple[str, str, float]]) -> dict[str, list[float]]:
    """Where a job's time goes, from the publish times of its events: one list of seconds per phase."""
    per_job: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job_id, kind, ts in published.values():
        per_job[job_id][kind].append(ts)
    out: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for ts in per_job.values():
        if not all(ts.get(k) for k in ("queued", "started", "progress", "succeeded")):
            continue
        marks = [min(ts["queued"]), min(ts["started"]), min(ts["progress"]), max(ts["progress"]), max(ts["succeeded"])]
        for phase, a, b in zip(PHASES, marks, marks[1:], strict=False):
            out[phase].append(b - a)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for agentmem up (default 2)")
    parser.add_argument("--jobs", type=int, default=200, help="one-memory jobs for enqueue→start (default 200)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between those jobs (default 0.05)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent SSE clients (default 100)")
    parser.add_argument("--event-jobs", type=int, default=30, help="jobs submitted while they listen (default 30)")
    parser.add_argument("--event-interval", type=float, default=0.3, help="seconds between those jobs (default 0.3)")
    parser.add_argument("--connect-wait", type=float, default=2.0,
                        help="seconds to let the SSE clients connect before the first job (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per part (default 300)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    args = parser.parse_args()

    print(f"before: {machine_load()}", flush=True)
    system = System(workers=args.workers, keep_data=args.keep_data)

    def work() -> tuple[dict, dict]:
        print(f"enqueue→start: {args.jobs} jobs, {args.interval * 1000:.0f} ms apart ...", flush=True)
        start = asyncio.run(enqueue_to_start(system.url, system.headers, args.jobs, args.interval, args.timeout))
        print(f"publish→receive: {args.clients} SSE clients, {args.event_jobs} jobs "
              f"{args.event_interval * 1000:.0f} ms apart ...", flush=True)
        sse = asyncio.run(publish_to_receive(system.url, system.headers, args.clients, args.event_jobs,
                                             args.event_interval, args.connect_wait, args.timeout))
        return start, sse

    result, failed = run_against(system, work)
    start, sse = result or (None, None)

    problems = []
    rows = []
    if start:
        rows.append(stats_row("enqueue→start (started_at - created_at)", start["waits"]))
        rows.append(stats_row("  job run time (finished_at - started_at)", start["runs"]))
        rows.append(stats_row("  POST sent → succeeded event at the client", start["round_trip"]))
    if sse:
        rows.append(stats_row("publish→SSE receive, all (client, event) pairs", sse["latencies"]))
        for kind in ("queued", "started", "progress", "succeeded", "failed"):
            if kind in sse["by_type"]:
                rows.append(stats_row(f"  {kind} events", sse["by_type"][kind]))
        for phase, values in sse["timeline"].items():
            rows.append(stats_row(f"job timeline: {phase}", values))
        if sse["not_done"] or sse["failed"]:
            problems.append(f"{sse['not_done']} job(s) unfinished, {sse['failed']} failed: {sse['failed_examples']}")
        if sse["clients_complete"] != sse["clients"] or sse["duplicates"]:
            problems.append(f"only {sse['clients_complete']} of {sse['clients']} clients received every event; "
                            f"{sse['duplicates']} duplicate deliveries")
        if sse["client_errors"]:
            problems.append(f"{len(sse['client_errors'])} SSE client(s) failed, e.g. {sse['client_errors'][0]}")
    if rows:
        print("\n" + table(["measure", "samples", "p50 ms", "p99 ms", "max ms"], rows))
    if start:
        print(f"\nenqueue→start: {start['jobs']} jobs, all succeeded, {start['retried']} retried")
    if sse:
        print(f"publish→receive: {sse['clients']} clients, {sse['jobs']} jobs; events expected per client "
              f"{sse['expected_per_client']} ({dict(sse['expected_by_type'])}); received per client "
              f"min {sse['received_min']} max {sse['received_max']}; clients with every event "
              f"{sse['clients_complete']}/{sse['clients']}; duplicates {sse['duplicates']}")
    return finish_run(system, failed, problems)


if __name__ == "__main__":
    sys.exit(main())
