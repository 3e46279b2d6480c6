"""A burst of concurrent searches: what is answered, what is shed, and how long each took.

    python bench/overload.py [--memories 3000] [--burst 200] [--bursts 3] [--clients 4] [--workers 2]

`agentmem up` runs on the embedded default; `--memories` synthetic sentences, embedded for real,
are seeded straight into its PostgreSQL with COPY (as bench/search_latency.py does), and the table
and its indexes are prewarmed. After 20 unmeasured searches, `--bursts` times: `--burst` hybrid
searches (feedback on, the default) sent at the same instant from `--clients` client processes (so
that one client's event loop is not what queues them), each on its own connection, and every answer
awaited. Then, per burst and over all of them: the answers by status and error code, and p50/p99/max
of the client-side latency of the successes and of the refused answers (`503`/`429`), whether each
refusal carried `Retry-After`, and how long the burst took to be fully answered.

A service under a burst it cannot serve at once should answer what it can within seconds and refuse
the rest quickly, with an honest code (`overloaded`) and `Retry-After`, rather than queue everything
and fail a fraction with `database_unavailable` after a long wait.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BenchError,
    System,
    finish_run,
    machine_load,
    percentile,
    run_against,
    synthetic_corpus,
    table,
)
from bench.search_latency import embeddings, prewarm, seed
from core.timing import parse_header

WARM_UP = 20
SEARCH = "/api/v1/memories/search"


def _answer(response: httpx.Response, elapsed_ms: float) -> tuple:
    """(status, code, ms, has Retry-After, {stage: ms} from Server-Timing) of one answer."""
    code = "ok"
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            reason = (error.get("details") or {}).get("reason") if isinstance(error.get("details"), dict) else None
            code = error["code"] + (f" ({reason})" if reason else "")
        except (ValueError, KeyError, TypeError):
            code = "(no error body)"
    stages = parse_header(response.headers.get("server-timing", ""))
    return response.status_code, code, elapsed_ms, "retry-after" in response.headers, stages


async def _fire(url: str, headers: dict[str, str], queries: list[str], start_at: float) -> list[tuple]:
    """Send every query at `start_at` (wall clock), each on a connection of its own; their answers."""
    limits = httpx.Limits(max_connections=len(queries), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:

        async def one(query: str) -> tuple:
            t0 = time.perf_counter()
            try:
                response = await client.post(SEARCH, json={"query": query, "mode": "hybrid", "top_k": 10})
            except httpx.TransportError as exc:
                return 0, f"transport: {type(exc).__name__}", (time.perf_counter() - t0) * 1000, False, {}
            return _answer(response, (time.perf_counter() - t0) * 1000)

        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await asyncio.gather(*(one(q) for q in queries))


def client_process(args: tuple) -> list[tuple]:
    """One client process's share of a burst (run in a process pool)."""
    url, headers, queries, start_at = args
    return asyncio.run(_fire(url, headers, queries, start_at))


def burst(pool, system: System, queries: list[str], clients: int) -> tuple[list[tuple], float]:
    """Every query at once, split over `clients` processes; (answers, seconds until the last answer)."""
    shares = [queries[i::clients] for i in range(clients)]
    start_at = time.time() + 1.0  # every client process is up and waiting by then
    answers = [a for share in pool.map(client_process, [(system.url, system.headers, s, start_at) for s in shares])
               for a in share]
    return answers, time.time() - start_at


def summarize(label: str, answers: list[tuple], seconds: float) -> tuple[list[object], list[list[object]]]:
    """A latency row and the rows of answers by status and code."""
    ok = [a[2] for a in answers if a[0] == 200]
    shed = [a[2] for a in answers if a[0] in (429, 503)]
    shed_without_retry_after = sum(1 for a in answers if a[0] in (429, 503) and not a[3])
    server = [a[4]["app"] for a in answers if a[0] == 200 and "app" in a[4]]

    def ms(values: list[float], p: float) -> str:
        return f"{percentile(values, p):.0f}" if values else "-"

    row = [label, len(answers), len(ok), ms(ok, 50), ms(ok, 99), f"{max(ok):.0f}" if ok else "-", ms(server, 50),
           len(shed), ms(shed, 50), ms(shed, 99), f"{max(shed):.0f}" if shed else "-", shed_without_retry_after,
           f"{seconds:.1f}"]
    counts = Counter((a[0], a[1]) for a in answers)
    return row, [[label, status, code, n] for (status, code), n in sorted(counts.items())]


STAGES = ("auth", "queue", "scope", "text", "embed", "embed_wait", "vector", "feedback", "load", "app")


def stage_rows(answers: list[tuple]) -> list[list[object]]:
    """Median ms of each Server-Timing stage, for the successes and for the refusals."""
    rows = []
    for label, kept in (("200", [a for a in answers if a[0] == 200]),
                        ("shed", [a for a in answers if a[0] in (429, 503)])):
        if kept:
            rows.append([label, len(kept)] + [f"{percentile([a[4][s] for a in kept if s in a[4]], 50):.0f}"
                                              if any(s in a[4] for a in kept) else "-" for s in STAGES])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=200, help="searches sent at once (default 200)")
    parser.add_argument("--bursts", type=int, default=3, help="bursts, one after the other (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="client processes sharing a burst (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the system (default 2)")
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args()

    print(f"before: {machine_load()}", flush=True)
    texts = synthetic_corpus(args.memories + WARM_UP + args.burst * args.bursts, seed=31)
    corpus, queries = texts[:args.memories], texts[args.memories:]
    t0 = time.monotonic()
    vectors = embeddings(corpus, len(corpus))
    print(f"embedded {len(corpus)} texts in {time.monotonic() - t0:.0f} s", flush=True)
    system = System(workers=args.workers, keep_data=args.keep_data)

    def work() -> tuple[list, list]:
        from core.servers import EmbeddedPostgres

        dsn = EmbeddedPostgres(system.data_dir).running_url()
        org_id = httpx.get(system.url + "/api/v1/organizations", headers=system.headers).json()[0]["id"]
        t0 = time.monotonic()
        asyncio.run(seed(dsn, org_id, corpus, vectors, scoped=1))
        print(f"seeded {len(corpus)} memories in {time.monotonic() - t0:.0f} s", flush=True)
        asyncio.run(prewarm(dsn))
        with httpx.Client(base_url=system.url, headers=system.headers, timeout=60) as client:
            for q in queries[:WARM_UP]:
                response = client.post(SEARCH, json={"query": q, "mode": "hybrid", "top_k": 10})
                if response.status_code != 200:
                    raise BenchError(f"warm-up search answered {response.status_code}: {response.text[:300]}")
        rows, code_rows, everything, total = [], [], [], 0.0
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            pool.map(client_process, [(system.url, system.headers, [], time.time())] * args.clients)  # imports
            for n in range(args.bursts):
                batch = queries[WARM_UP + n * args.burst:WARM_UP + (n + 1) * args.burst]
                answers, seconds = burst(pool, system, batch, args.clients)
                print(f"burst {n + 1}: {len(answers)} answers in {seconds:.1f} s", flush=True)
                row, codes = summarize(f"burst {n + 1}", answers, seconds)
                rows.append(row)
                code_rows += codes
                everything += answers
                total += seconds
        row, codes = summarize("all", everything, total)
        return rows + [row], code_rows + codes, stage_rows(everything)

    result, failed = run_against(system, work)
    rows, code_rows, stages = result or ([], [], [])
    if rows:
        print(f"\n{args.memories} memories; bursts of {args.burst} hybrid searches from {args.clients} client "
              f"processes; latency in ms, client side\n")
        print(table(["burst", "sent", "200", "p50", "p99", "max", "server p50", "shed", "shed p50", "shed p99",
                     "shed max", "no Retry-After", "all answered s"], rows))
        print("\nanswers by status and code\n")
        print(table(["burst", "status", "code", "n"], code_rows))
        print("\nwhere the time went, all bursts: the server's Server-Timing, median ms per stage (queue: waiting "
              "for admission; app: the whole request in the server, from when it read the request)\n")
        print(table(["answers", "n", *STAGES], stages))
    return finish_run(system, failed, [])


if __name__ == "__main__":
    sys.exit(main())
