"""Ingest throughput: the raw embedder versus the whole system (API → job → worker → PostgreSQL → search).

    python bench/ingest.py [--n 10000] [--workers 2] [--corpus synthetic|longmemeval] [--skip-small-requests]
                           [--data-dir DIR]

1. raw: in a separate process, before the system starts (so nothing competes for the CPU), the
   same model as the workers (core.embedder.LocalModel) embeds the N texts in chunks of 256.
2. large requests: N memories POSTed in requests of up to 10,000 items; timed from the first POST
   until every job has succeeded and a search in that user's scope returns hits.
3. small requests: the same N texts as N/10 requests of 10 items, 8 requests in flight, in a fresh
   user scope, timed the same way.
`--data-dir DIR` ingests into a system that already holds memories (for instance the million that
`search_latency.py --memories 1000000 --data-dir DIR` seeded): the same scenarios, into the same
organization, so its HNSW index and full-text index are that large. The count it held is printed.
Exits non-zero if a job fails, a count is wrong or anything times out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BenchError,
    JobWatcher,
    System,
    corpus,
    fetch_jobs,
    finish_run,
    machine_load,
    run_against,
    run_child_json,
    table,
)

MAX_ITEMS = 10_000
RAW_CHUNK = 256


def measure_raw(texts: list[str]) -> dict:
    """Embed `texts` with the workers' model on this process, in chunks of 256; model load and warm-up excluded."""
    from core.embedder import LocalModel

    model = LocalModel()
    t0 = time.perf_counter()
    model.load()
    model.encode_sync(texts[:64])  # first call pays one-off costs (allocations, kernels)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = 0
    for start in range(0, len(texts), RAW_CHUNK):
        count += len(model.encode_sync(texts[start:start + RAW_CHUNK]))
    seconds = time.perf_counter() - t0
    return {"texts": count, "seconds": seconds, "rate": count / seconds, "load_seconds": load_s}


def run_raw_in_subprocess(args: argparse.Namespace, timeout: float) -> dict:
    """Run the raw baseline in a child process so its memory and threads are gone before the system starts."""
    return run_child_json([sys.executable, __file__, "--n", str(args.n), "--corpus", args.corpus, "--seed",
                           str(args.seed), "--raw-only"], "raw embedder baseline", timeout)


async def post_batches(client: httpx.AsyncClient, batches: list[list[dict]], concurrency: int) -> list[str]:
    """POST every batch (`concurrency` in flight); returns the job ids in batch order."""
    job_ids: list[str | None] = [None] * len(batches)
    next_index = iter(range(len(batches)))

    async def sender() -> None:
        for i in next_index:
            response = await client.post("/api/v1/memories", json={"items": batches[i]})
            if response.status_code != 202:
                raise BenchError(f"POST /api/v1/memories answered {response.status_code}: {response.text[:500]}")
            job_ids[i] = response.json()["id"]

    await asyncio.gather(*(sender() for _ in range(min(concurrency, len(batches)))))
    return [j for j in job_ids if j is not None]


async def search_hits(client: httpx.AsyncClient, query: str, user_id: str, deadline: float) -> list[dict]:
    """Search until hits come back (they should at once: a succeeded job's rows are committed)."""
    while True:
        response = await client.post("/api/v1/memories/search", json={"query": query, "user_id": user_id, "top_k": 10})
        response.raise_for_status()
        hits = response.json()["hits"]
        if hits:
            return hits
        if time.monotonic() > deadline:
            raise BenchError(f"search in scope {user_id!r} found nothing although every job succeeded")
        await asyncio.sleep(0.2)


async def run_scenario(url: str, headers: dict[str, str], name: str, texts: list[str], per_request: int,
                       concurrency: int,
                       timeout: float) -> dict:
    """Submit `texts` in requests of `per_request` items in a fresh user scope; time until all are searchable."""
    user_id = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    items = [{"content": t, "user_id": user_id, "metadata": {"bench": name, "i": i}} for i, t in enumerate(texts)]
    batches = [items[i:i + per_request] for i in range(0, len(items), per_request)]
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(120), limits=limits) as client:
        async with JobWatcher(client) as watcher:
            t0 = time.monotonic()
            deadline = t0 + timeout
            job_ids = await post_batches(client, batches, concurrency)
            submitted = time.monotonic()
            await watcher.wait(job_ids, deadline)
            all_done = time.monotonic()
            hits = await search_hits(client, texts[-1], user_id, deadline)
            searchable = time.monotonic()
        rows = await fetch_jobs(client, job_ids)
    failed = [r for r in rows.values() if r["status"] != "succeeded"]
    results = [r.get("result") or {} for r in rows.values() if r["status"] == "succeeded"]
    stored = sum(r.get("memories", 0) for r in results)
    inserted = sum(r.get("inserted", 0) + r.get("already_stored", 0) for r in results)
    top_is_exact = hits[0]["memory"]["content"] == texts[-1]
    return {"name": name, "user_id": user_id, "requests": len(batches), "jobs": len(job_ids), "failed": len(failed),
            "failed_examples": [(r["id"], r["status"], r.get("error")) for r in failed[:3]],
            "memories": stored, "inserted": inserted, "submit_s": submitted - t0, "all_succeeded_s": all_done - t0,
            "seconds": searchable - t0, "top_hit_exact": top_is_exact,
            "attempts_over_1": sum(1 for r in rows.values() if r.get("attempts", 1) > 1)}


async def memories_held(system: System) -> int:
    import asyncpg

    from core.servers import EmbeddedPostgres

    conn = await asyncpg.connect(EmbeddedPostgres(system.data_dir).running_url())
    try:
        return await conn.fetchval("SELECT count(*) FROM memories WHERE deleted_at IS NULL")
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="memories per scenario (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for agentmem up (default 2)")
    parser.add_argument("--corpus", choices=("synthetic", "longmemeval"), default="synthetic",
                        help="synthetic facts of 8-40 words (default) or LongMemEval turns cut to 1000 chars")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight for small requests (default 8)")
    parser.add_argument("--skip-small-requests", action="store_true", help="skip the N/10 x 10-item scenario")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per scenario (default max(300, n/10))")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    parser.add_argument("--data-dir", type=Path, help="ingest into the system kept in DIR (its memories stay)")
    parser.add_argument("--raw-only", metavar="JSON_PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 10:
        parser.error("--n must be at least 10")
    texts = corpus(args.corpus, args.n, args.seed)
    if args.raw_only:
        Path(args.raw_only).write_text(json.dumps(measure_raw(texts)))
        return 0

    timeout = args.timeout or max(300.0, args.n / 10)
    print(f"before: {machine_load()}", flush=True)
    print(f"corpus: {args.n} {args.corpus} texts, {sum(len(t) for t in texts) / len(texts):.0f} chars on average")
    print("raw embedder baseline (separate process, system not running) ...", flush=True)
    try:
        raw = run_raw_in_subprocess(args, timeout)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    print(f"  {raw['texts']} texts in {raw['seconds']:.2f} s = {raw['rate']:.0f} texts/s "
          f"(model load + warm-up {raw['load_seconds']:.1f} s, not counted)", flush=True)

    system = System.on(args.data_dir, workers=args.workers, keep_data=args.keep_data)
    scenarios: list[dict] = []

    def work() -> None:
        print(f"the system holds {asyncio.run(memories_held(system))} memories before the ingest", flush=True)
        plans = [("large-requests", min(MAX_ITEMS, args.n), 1)]
        if not args.skip_small_requests:
            plans.append(("small-requests", 10, args.concurrency))
        for name, per_request, concurrency in plans:
            print(f"{name}: {args.n} memories in requests of {per_request}, {concurrency} in flight ...", flush=True)
            result = asyncio.run(run_scenario(system.url, system.headers, name, texts, per_request, concurrency,
                                              timeout))
            scenarios.append(result)
            print(f"  submitted in {result['submit_s']:.1f} s, "
                  f"all jobs succeeded at {result['all_succeeded_s']:.1f} s, "
                  f"searchable at {result['seconds']:.1f} s", flush=True)

    _, failed = run_against(system, work)

    problems = []
    for s in scenarios:
        if s["failed"]:
            problems.append(f"{s['name']}: {s['failed']} failed job(s), e.g. {s['failed_examples']}")
        if s["memories"] != args.n or s["inserted"] != args.n:
            problems.append(f"{s['name']}: jobs report {s['memories']} memories ({s['inserted']} stored), "
                            f"expected {args.n}")

    rows = [["raw embedder (encode_sync, chunks of 256)", raw["texts"], f"{raw['seconds']:.2f}",
             round(raw["rate"]), "1.00"]]
    for s in scenarios:
        rate = s["memories"] / s["seconds"]
        rows.append([f"{s['name']}: {s['requests']} x {args.n // s['requests']} items", s["memories"],
                     f"{s['seconds']:.2f}", round(rate), f"{rate / raw['rate']:.2f}"])
    print("\n" + table(["scenario", "memories", "seconds", "memories/s", "ratio vs raw"], rows))
    print()
    for s in scenarios:
        print(f"{s['name']}: jobs {s['jobs']}, failed {s['failed']}, retried {s['attempts_over_1']}, "
              f"memories per job results {s['memories']} (stored {s['inserted']}), "
              f"POSTs took {s['submit_s']:.2f} s, all succeeded at {s['all_succeeded_s']:.2f} s, "
              f"search top hit is the last text: {s['top_hit_exact']}")
    return finish_run(system, failed, problems)


if __name__ == "__main__":
    sys.exit(main())
