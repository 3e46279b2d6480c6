"""What the job machinery costs: no-op jobs through the API and workers against bare Dramatiq, same run.

    python bench/noop_jobs.py [--jobs 2000] [--clients 8] [--workers 2] [--rounds 2] [--env AGENTMEM_X=Y ...]
                              [--compare-tree DIR] [--profile DIR]

`agentmem up` runs with AGENTMEM_BENCH_JOBS (an undocumented route for no-op jobs, and the workers
consume the `bench` queue). Then, alternating, `--rounds` times each:

- raw Dramatiq: `--jobs` messages for a bare actor that does nothing (`bench_bare_noop`, no job row),
  sent on the system's own broker (the same JobBroker, Redis, worker processes and threads) by
  `--clients` sender threads; timed from the first send until the broker holds none of them (acked).
- AgentMem: `--jobs` no-op jobs submitted by `--clients` closed-loop HTTP clients
  (`POST /api/v1/bench/noop-jobs`: authentication, quota, the job row, its message, its `queued`
  event), each run by the workers (claim, lease, outcome, audit row, events) until terminal, as seen
  on the organization's event stream; timed from the first POST until the last terminal event.

With `--compare-tree DIR` a second system runs another checkout's code (which must have the no-op
kind), and each round also runs its AgentMem side: old and new code measured alternately, same run.

Printed: each side's rate (jobs/s), the ratio AgentMem ÷ raw (target ≥ 0.5), the CPU each process
used per side (% of one core), and the resident memory of the API and workers at rest and after.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis
from dramatiq import Message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BenchError,
    JobWatcher,
    System,
    finish_run,
    machine_load,
    run_against_all,
    table,
)
from bench.idle import Processes, rss_mb  # noqa: E402
from core.queue import BENCH_QUEUE, NAMESPACE, JobBroker  # noqa: E402

DEADLINE = 300.0


def raw_round(system: System, n: int, senders: int) -> float:
    """Messages for the bare actor, sent by `senders` threads; seconds until the broker holds none of them."""
    url = f"redis://127.0.0.1:{(system.data_dir / 'redis.port').read_text().strip()}/0"
    broker = JobBroker(client=redis.Redis.from_url(url), namespace=NAMESPACE)
    msgs = f"{NAMESPACE}:{BENCH_QUEUE}.msgs"
    if broker.client.hlen(msgs):
        raise BenchError("the bench queue is not empty before the raw round")
    shares = [n // senders + (1 if i < n % senders else 0) for i in range(senders)]

    def send(count: int) -> None:
        for _ in range(count):
            broker.enqueue(Message(queue_name=BENCH_QUEUE, actor_name="bench_bare_noop", args=(), kwargs={},
                                   options={}, message_id=str(uuid.uuid4())))

    threads = [threading.Thread(target=send, args=(k,)) for k in shares]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = started + DEADLINE
    while broker.client.hlen(msgs):
        if time.monotonic() > deadline:
            raise BenchError(f"raw round: {broker.client.hlen(msgs)} messages still in the broker")
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    broker.client.close()
    return elapsed


async def agentmem_round(system: System, n: int, clients: int) -> float:
    """No-op jobs through the API by `clients` closed-loop clients; seconds until the last is terminal."""
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, timeout=60, limits=limits) as client:
        async with JobWatcher(client) as watcher:
            ids: list[str] = []
            remaining = n

            async def one_client() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    response = await client.post("/api/v1/bench/noop-jobs")
                    if response.status_code != 202:
                        raise BenchError(f"noop job refused: {response.status_code} {response.text[:300]}")
                    ids.append(response.json()["id"])

            started = time.monotonic()
            await asyncio.gather(*(one_client() for _ in range(clients)))
            last = await watcher.wait(ids, started + DEADLINE)
    return last - started


def start_profiles(procs: Processes, out_dir: Path, seconds: float) -> list[subprocess.Popen]:
    """py-spy (if installed) on the API and each worker for `seconds`, as folded stacks in `out_dir`."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("--profile: py-spy is not on PATH (pip install py-spy); not profiling", file=sys.stderr)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-d", str(int(seconds)),
                              "-p", str(pid), "-o", str(out_dir / f"{name}-{pid}.folded")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid, name in procs.pids.items() if name in ("api", "worker") and rss_mb(pid) > 200]


def run(systems: dict[str, System], args: argparse.Namespace) -> dict:
    main = systems["this"]
    procs = {name: Processes(system) for name, system in systems.items()}
    rest = {name: p.rss() for name, p in procs.items()}
    # A short unmeasured round of each: connections, pools and code paths warm.
    raw_round(main, 100, args.clients)
    for system in systems.values():
        asyncio.run(agentmem_round(system, 100, args.clients))
    results: dict[str, list[tuple[float, dict[str, float]]]] = {"raw": [], **{name: [] for name in systems}}
    for _ in range(args.rounds):
        procs["this"].mark()
        seconds = raw_round(main, args.jobs, args.clients)
        results["raw"].append((args.jobs / seconds, procs["this"].since()))
        for name, system in systems.items():
            procs[name].mark()
            spies = start_profiles(procs[name], args.profile / name.split()[0], args.profile_seconds) \
                if args.profile else []
            seconds = asyncio.run(agentmem_round(system, args.jobs, args.clients))
            results[name].append((args.jobs / seconds, procs[name].since()))
            for spy in spies:
                spy.wait(timeout=args.profile_seconds + 30)
        args.profile = None  # the first round only
    return {"results": results, "rss_rest": rest, "rss_after": {name: p.rss() for name, p in procs.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs (and raw messages) per round (default 2000)")
    parser.add_argument("--clients", type=int, default=8, help="HTTP clients / sender threads (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each side, alternating (default 2)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the API and workers during the first AgentMem round (folded stacks in DIR)")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the system's data dir (default: a fresh one under /tmp, deleted afterwards)")
    parser.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="also run a system on this checkout's code, alternating with this one round by round "
                             "(a same-run baseline of old code)")
    parser.add_argument("--env", action="append", default=[], metavar="AGENTMEM_X=Y",
                        help="a setting for the system (repeatable)")
    args = parser.parse_args()
    print(f"before: {machine_load()}", flush=True)
    env = {"AGENTMEM_BENCH_JOBS": "true", **dict(item.split("=", 1) for item in args.env)}
    systems = {"this": System.on(args.data_dir, workers=args.workers)}
    systems["this"].env = dict(env)
    if args.compare_tree is not None:
        other = System(workers=args.workers, repo=args.compare_tree.resolve())
        other.env = dict(env)
        systems[f"compared (code of {args.compare_tree})"] = other
    out, failed = run_against_all(list(systems.values()), lambda: run(systems, args))
    if out:
        rows = []
        roles = ("api", "worker", "postgres", "redis", "scheduler")
        sides = [("raw", "raw Dramatiq (bare actor)")] + [(name, f"AgentMem no-op jobs: {name}") for name in systems]
        for side, label in sides:
            for i, (rate, cpu) in enumerate(out["results"][side], 1):
                # % of a core at `rate` jobs/s: ms of CPU per job, all of the system's processes together.
                rows.append([label, i, f"{rate:.0f}", *(f"{cpu.get(r, 0.0):.0f}" for r in roles),
                             f"{10 * sum(cpu.values()) / rate:.1f}"])
        print(f"\n{args.jobs} per round, {args.clients} clients, {args.workers} workers (CPU: % of one core; "
              f"postgres: its server and backends):")
        print(table(["side", "round", "jobs/s", *(f"{r} CPU%" for r in roles), "CPU ms/job"], rows))
        raw = max(r for r, _ in out["results"]["raw"])
        for name in systems:
            ours = max(r for r, _ in out["results"][name])
            print(f"best of rounds, {name}: raw {raw:.0f}/s, AgentMem {ours:.0f}/s, ratio {ours / raw:.3f} "
                  f"(target >= 0.5)")
            print("  RSS MB at rest: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(out["rss_rest"][name].items()))
                  + "; after: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(out["rss_after"][name].items())))
    for system in list(systems.values())[1:]:
        system.cleanup(failed)
    system = systems["this"]
    return finish_run(system, failed, [])


if __name__ == "__main__":
    sys.exit(main())
