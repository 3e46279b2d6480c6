"""Search throughput: searches/s and p50/p99 with concurrent closed-loop clients over 2,000 memories.

    python bench/search_throughput.py [--memories 2000] [--clients 8] [--seconds 20] [--modes hybrid,vector]
                                      [--env AGENTMEM_X=Y ...] [--profile DIR]

`agentmem up` runs on the embedded default (one worker: search needs none, /readyz wants one); the
memories (synthetic sentences, every one embedded for real with the local model) are seeded straight
into its PostgreSQL with COPY, as bench/search_latency.py does, and prewarmed. Then per mode
(`--modes`), after 20 unmeasured searches: `--clients` clients, each sending its next search as soon as
the last one is answered (a closed loop), for `--seconds`. Each search is another synthetic sentence,
embedded by the API (query embedding included).

Printed per mode: searches/s, client-side p50/p99, the medians of the server's Server-Timing stages,
and the API's CPU (% of one core) and resident memory. The same-run baseline is the raw embedder:
one query at a time through `LocalModel.encode_sync` with the API's torch threads, in this process
while the system is idle, as queries/s (a search can't be cheaper than embedding its query once,
unless queries share a model call). `--profile DIR` py-spies the API during the first mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BenchError,
    System,
    finish_run,
    machine_load,
    percentile,
    run_against,
    synthetic_corpus,
    table,
)
from bench.idle import cpu_seconds, descendants, role, rss_mb  # noqa: E402
from bench.search_latency import embeddings, prewarm, seed  # noqa: E402
from core.timing import parse_header  # noqa: E402

WARM_UP = 20
STAGES = ("auth", "queue", "scope", "text", "embed", "embed_wait", "vector", "feedback", "load", "app")


def raw_embedder_rate(queries: list[str], threads: int) -> float:
    """Queries/s of the local model embedding one query per call on `threads` torch threads (after a warm-up)."""
    import torch

    from core.embedder import LocalModel

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = LocalModel()
        model.encode_sync(queries[:5])
        t0 = time.perf_counter()
        for q in queries:
            model.encode_sync([q])
        return len(queries) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def api_pid(system: System) -> int:
    assert system.process is not None
    for pid in descendants(system.process.pid):
        if role(pid) == "api":
            return pid
    raise BenchError("no API process found")


async def closed_loop(system: System, mode: str, queries: list[str], clients: int, seconds: float) -> dict:
    """`clients` clients searching back to back for `seconds`; latencies and Server-Timing stages."""
    limits = httpx.Limits(max_connections=clients)
    times: list[float] = []
    stages: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, timeout=60, limits=limits) as client:
        async def search(q: str) -> tuple[float, httpx.Response]:
            t0 = time.perf_counter()
            response = await client.post("/api/v1/memories/search", json={"query": q, "mode": mode, "top_k": 10})
            if response.status_code != 200:
                raise BenchError(f"search answered {response.status_code}: {response.text[:300]}")
            return (time.perf_counter() - t0) * 1000, response

        for i in range(0, WARM_UP, clients):
            await asyncio.gather(*(search(q) for q in queries[i:min(WARM_UP, i + clients)]))
        next_query = WARM_UP
        stop_at = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal next_query
            while time.perf_counter() < stop_at:
                q = queries[next_query % len(queries)]
                next_query += 1
                ms, response = await search(q)
                times.append(ms)
                for name, value in parse_header(response.headers.get("server-timing", "")).items():
                    stages.setdefault(name, []).append(value)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"rate": len(times) / elapsed, "n": len(times), "p50": percentile(times, 50),
            "p99": percentile(times, 99), "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per mode (default 20)")
    parser.add_argument("--modes", default="hybrid,vector")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the system's data dir (default: a fresh one under /tmp, deleted afterwards)")
    parser.add_argument("--env", action="append", default=[], metavar="AGENTMEM_X=Y",
                        help="a setting for the system (repeatable)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the API during the first mode (folded stacks in DIR)")
    args = parser.parse_args()
    modes = args.modes.split(",")

    print(f"before: {machine_load()}", flush=True)
    texts = synthetic_corpus(args.memories + 2000, seed=29)
    corpus, queries = texts[:args.memories], texts[args.memories:]
    # The corpus's vectors are the same for the same arguments: kept for the next run (embedding 2,000 texts
    # takes minutes on a busy machine).
    cached = Path(tempfile.gettempdir()) / f"search-throughput-vectors-{args.memories}.npy"
    if cached.exists():
        vectors = np.load(cached)
    else:
        t0 = time.monotonic()
        vectors = embeddings(corpus, len(corpus))
        np.save(cached, vectors)
        print(f"embedded {len(corpus)} texts in {time.monotonic() - t0:.0f} s (kept in {cached})", flush=True)
    system = System.on(args.data_dir, workers=1)
    # Throughput, not the guard rail: on a busy machine a search may wait over a second for a slot.
    system.env = {"AGENTMEM_SEARCH_QUEUE_SECONDS": "30", **dict(item.split("=", 1) for item in args.env)}
    threads = int(system.env.get("AGENTMEM_EMBEDDING_QUERY_THREADS", "1"))

    def work() -> dict:
        from core.servers import EmbeddedPostgres

        dsn = EmbeddedPostgres(system.data_dir).running_url()
        org_id = httpx.get(system.url + "/api/v1/organizations", headers=system.headers).json()[0]["id"]
        asyncio.run(seed(dsn, org_id, corpus, vectors, scoped=max(1, args.memories // 100), passages=0.0))
        asyncio.run(prewarm(dsn))
        raw = raw_embedder_rate(queries[:200], threads)
        print(f"raw embedder, one query per call, {threads} torch thread(s): {raw:.0f} queries/s", flush=True)
        pid = api_pid(system)
        out = {"raw": raw, "rss_rest": rss_mb(pid), "modes": {}}
        for i, mode in enumerate(modes):
            spy = None
            if args.profile and i == 0 and shutil.which("py-spy"):
                args.profile.mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw", "-d",
                                        str(int(args.seconds)), "-p", str(pid), "-o",
                                        str(args.profile / f"api-{mode}.folded")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu0, w0 = cpu_seconds(pid), time.monotonic()
            result = asyncio.run(closed_loop(system, mode, queries, args.clients, args.seconds))
            result["api_cpu"] = 100 * ((cpu_seconds(pid) or 0) - (cpu0 or 0)) / (time.monotonic() - w0)
            result["rss"] = rss_mb(pid)
            out["modes"][mode] = result
            if spy is not None:
                spy.wait(timeout=args.seconds + 30)
        return out

    out, failed = run_against(system, work)
    if out:
        rows, stage_rows = [], []
        for mode, r in out["modes"].items():
            rows.append([mode, r["n"], f"{r['rate']:.1f}", f"{r['rate'] / out['raw']:.2f}", f"{r['p50']:.0f}",
                         f"{r['p99']:.0f}", f"{r['api_cpu']:.0f}", f"{r['rss']:.0f}"])
            stage_rows.append([mode] + [f"{percentile(r['stages'][s], 50):.1f}" if s in r["stages"] else "-"
                                        for s in STAGES])
        print(f"\n{args.memories} memories, {args.clients} closed-loop clients, {args.seconds:.0f} s per mode; "
              f"raw embedder (same run, one query per call): {out['raw']:.0f} queries/s\n")
        print(table(["mode", "searches", "searches/s", "÷ raw embedder", "p50 ms", "p99 ms", "API CPU %",
                     "API RSS MB"], rows))
        print("\nServer-Timing medians, ms:\n")
        print(table(["mode", *STAGES], stage_rows))
        print(f"\nAPI RSS at rest: {out['rss_rest']:.0f} MB; settings: {system.env or 'defaults'}; "
              f"pid {os.getpid()}")
    return finish_run(system, failed, [])


if __name__ == "__main__":
    sys.exit(main())
