"""Search throughput: searches/s and p50/p99 with concurrent closed-loop clients over 2,000 memories.

    python bench/search_throughput.py [--memories 2000] [--clients 8] [--seconds 20] [--rounds 4]
                                      [--modes hybrid,vector] [--env AGENTMEM_X=Y ...]
                                      [--compare-env AGENTMEM_X=Y ...] [--compare-tree DIR] [--profile DIR]

`agentmem up` runs on the embedded default (one worker: search needs none, /readyz wants one); the
memories (synthetic sentences, every one embedded for real with the local model) are seeded straight
into its PostgreSQL with COPY, as bench/search_latency.py does, and prewarmed. Then per mode
(`--modes`): `--clients` clients, each sending its next search as soon as the last one is answered (a
closed loop), for `--seconds` in `--rounds` slices (20 unmeasured searches first). Each search is
another synthetic sentence, embedded by the API (query embedding included).

Same-run baselines: the raw embedder, one query per call through `LocalModel.encode_sync` with the
API's torch threads, in this process between slices (a search can't be cheaper than embedding its
query once, unless queries share a model call); and, with `--compare-env` or `--compare-tree`, a
second system (other settings, or another checkout's code) measured slice by slice alternately with
the first, so both see the same machine. Printed per system and mode: searches/s, its ratio to the
raw embedder, client-side p50/p99, the API's CPU (% of one core) and RSS, the CPU per search of the whole
system (API, PostgreSQL, Redis, worker) and of the API and PostgreSQL, and the medians of the
server's Server-Timing stages. `--profile DIR` py-spies each API during its first slice.
"""

from __future__ import annotations

import argparse
import asyncio
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
    run_against_all,
    setting,
    synthetic_corpus,
    table,
)
from bench.idle import Processes, descendants, role, rss_mb  # noqa: E402
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


async def closed_loop(system: System, mode: str, queries: list[str], start: int, clients: int, seconds: float,
                      warm_up: bool) -> tuple[list[float], dict[str, list[float]], float]:
    """`clients` clients searching back to back for `seconds` (after WARM_UP unmeasured searches if `warm_up`);
    their latencies, the Server-Timing stages, and the seconds measured."""
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

        if warm_up:
            for i in range(0, WARM_UP, clients):
                await asyncio.gather(*(search(q) for q in queries[i:min(WARM_UP, i + clients)]))
        next_query = start
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
        return times, stages, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per mode and system "
                        "(default 20), in --rounds slices")
    parser.add_argument("--rounds", type=int, default=4, help="slices the measurement alternates in (default 4)")
    parser.add_argument("--modes", default="hybrid,vector")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the system's data dir (default: a fresh one under /tmp, deleted afterwards)")
    parser.add_argument("--env", action="append", default=[], metavar="AGENTMEM_X=Y",
                        help="a setting for the system (repeatable)")
    parser.add_argument("--compare-env", action="append", default=None, metavar="AGENTMEM_X=Y",
                        help="also run a second system with these settings (over --env), alternating with the "
                             "first slice by slice (repeatable)")
    parser.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="the second system runs the code of this checkout (a same-run baseline of old code)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the API during the first slice of the first mode (folded stacks in DIR)")
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
    # Throughput, not the guard rail: on a busy machine a search may wait over a second for a slot.
    base_env = {"AGENTMEM_SEARCH_QUEUE_SECONDS": "30", **setting(args.env)}
    systems = {"this": System.on(args.data_dir, workers=1)}
    systems["this"].env = dict(base_env)
    if args.compare_env is not None or args.compare_tree is not None:
        other = System(workers=1)
        other.env = {**base_env, **setting(args.compare_env or [])}
        if args.compare_tree is not None:
            other.repo = args.compare_tree.resolve()
        label = ", ".join(filter(None, [f"code of {args.compare_tree}" if args.compare_tree else "",
                                        " ".join(args.compare_env or [])]))
        systems[f"compared ({label})"] = other
    threads = int(base_env.get("AGENTMEM_EMBEDDING_QUERY_THREADS", "1"))

    def work() -> dict:
        from core.servers import EmbeddedPostgres

        pids = {}
        for name, system in systems.items():
            dsn = EmbeddedPostgres(system.data_dir).running_url()
            org_id = httpx.get(system.url + "/api/v1/organizations", headers=system.headers).json()[0]["id"]
            asyncio.run(seed(dsn, org_id, corpus, vectors, scoped=max(1, args.memories // 100), passages=0.0))
            asyncio.run(prewarm(dsn))
            pids[name] = api_pid(system)
        out: dict = {"raw": [], "rss_rest": {n: rss_mb(p) for n, p in pids.items()}, "runs": {}}
        slice_seconds = args.seconds / args.rounds
        next_query = WARM_UP
        for r in range(args.rounds):
            # The baseline between slices, so a machine whose load changes during the run moves both.
            out["raw"].append(raw_embedder_rate(queries[r * 40:(r + 1) * 40], threads))
            for mode in modes:
                for name, system in systems.items():
                    spy = None
                    if args.profile and r == 0 and mode == modes[0] and shutil.which("py-spy"):
                        args.profile.mkdir(parents=True, exist_ok=True)
                        spy = subprocess.Popen(
                            ["py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw", "-d",
                             str(max(1, int(slice_seconds))), "-p", str(pids[name]), "-o",
                             str(args.profile / f"api-{mode}-{name.split()[0]}.folded")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    if r == 0:  # the warm-up opens the API's pooled connections: their backends are then counted
                        asyncio.run(closed_loop(system, mode, queries, 0, args.clients, 0.0, warm_up=True))
                    procs = Processes(system)
                    times, stages, elapsed = asyncio.run(closed_loop(system, mode, queries, next_query, args.clients,
                                                                     slice_seconds, warm_up=False))
                    used = procs.since()
                    next_query += len(times)
                    run = out["runs"].setdefault((name, mode), {"times": [], "stages": {}, "seconds": 0.0,
                                                                "cpu": {}})
                    run["times"] += times
                    run["seconds"] += elapsed
                    for who, percent in used.items():  # % of a core over the slice → core-seconds
                        run["cpu"][who] = run["cpu"].get(who, 0.0) + percent * elapsed / 100
                    for stage, values in stages.items():
                        run["stages"].setdefault(stage, []).extend(values)
                    run["rss"] = rss_mb(pids[name])
                    if spy is not None:
                        spy.wait(timeout=slice_seconds + 30)
        return out

    out, failed = run_against_all(list(systems.values()), work)
    if out:
        raw = sum(out["raw"]) / len(out["raw"])
        rows, stage_rows = [], []
        for (name, mode), run in out["runs"].items():
            rate = len(run["times"]) / run["seconds"]
            cpu = {who: 1000 * seconds / len(run["times"]) for who, seconds in run["cpu"].items()}
            rows.append([name, mode, len(run["times"]), f"{rate:.1f}", f"{rate / raw:.2f}",
                         f"{percentile(run['times'], 50):.0f}", f"{percentile(run['times'], 99):.0f}",
                         f"{100 * run['cpu'].get('api', 0.0) / run['seconds']:.0f}",
                         f"{sum(cpu.values()):.1f} ({cpu.get('api', 0.0):.1f} / {cpu.get('postgres', 0.0):.1f})",
                         f"{run['rss']:.0f}"])
            stage_rows.append([name, mode] + [f"{percentile(run['stages'][s], 50):.1f}" if s in run["stages"]
                                              else "-" for s in STAGES])
        print(f"\n{args.memories} memories, {args.clients} closed-loop clients, {args.seconds:.0f} s per mode and "
              f"system in {args.rounds} alternating slices; raw embedder (same run, one query per call, between "
              f"slices): {raw:.0f} queries/s ({', '.join(f'{r:.0f}' for r in out['raw'])})\n")
        print(table(["system", "mode", "searches", "searches/s", "÷ raw embedder", "p50 ms", "p99 ms", "API CPU %",
                     "CPU ms/search (API / PostgreSQL)", "API RSS MB"], rows))
        print("\nServer-Timing medians, ms:\n")
        print(table(["system", "mode", *STAGES], stage_rows))
        print("\nAPI RSS at rest: " + ", ".join(f"{n} {v:.0f} MB" for n, v in out["rss_rest"].items())
              + f"; settings of 'this': {systems['this'].env}")
    failed_all = failed
    for system in list(systems.values())[1:]:
        system.cleanup(failed_all)
    return finish_run(systems["this"], failed_all, [])


if __name__ == "__main__":
    sys.exit(main())
