"""Fan-out: publish → SSE receive latency with many followers of one stream on ONE API process.

    python bench/fanout.py [--followers 100,1000] [--events 150] [--rate 10] [--client-processes 4]

Starts `agentmem up --workers 1` (its API has the event hub, `AGENTMEM_EVENT_HUB=true`), then a second API
process on the same database and Redis with `AGENTMEM_EVENT_HUB=false`: every follower blocks on XREAD
itself, the path before the hub, as this run's baseline. For each follower count and each API in turn:
`--client-processes` processes open the follower connections to GET /api/v1/events (the organization's
stream) between them, with a minimal asyncio HTTP client (so the clients' own CPU stays small); once
the API reports them all open (`agentmem_open_streams`), this process XADDs `--events` events to the
organization's stream at `--rate` per second (core.events.publish, as workers do) while a raw Redis
XREAD client in this process times the same events (the floor: Redis and this machine, no API).
Latency = receive time − the event's `ts` (time.time() at publish, same machine). Also the API's CPU
(utime+stime over the phase ÷ its wall time) and resident memory, at rest before the phase and its peak
during, and the worker's. Exits non-zero if a follower misses an event or anything times out.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchError, System, finish_run, free_port, machine_load, percentile, run_against, table  # noqa: E402
from bench.idle import cpu_seconds, descendants, role, rss_mb  # noqa: E402

EVENT = re.compile(rb'id: (\d+-\d+)\nevent: [a-z_]+\ndata: [^\n]*?"ts":([0-9.e+-]+)')


# --- the follower clients (separate processes) ------------------------------------------------------

async def follow_raw(host: str, port: int, auth: str, latencies: dict[str, float], opened: list[int]) -> None:
    """One SSE connection over a bare asyncio stream: no HTTP library, a regex per read."""
    for attempt in range(10):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            break
        writer.close()
        # A connection storm on a busy machine can meet the API's load shedding (503 with Retry-After): that
        # is not what is measured, so wait as told and connect again.
        if not head.startswith(b"HTTP/1.1 503") or attempt == 9:
            raise BenchError(f"GET /api/v1/events answered {head[:200]!r}")
        await asyncio.sleep(1 + attempt)
    opened[0] += 1
    pending = b""
    while True:
        chunk = await reader.read(65536)
        received = time.time()
        if not chunk:
            return
        pending += chunk
        end = pending.rfind(b"\n\n")
        if end < 0:
            continue
        for match in EVENT.finditer(pending, 0, end + 2):
            latencies[match[1].decode()] = received - float(match[2])
        pending = pending[end + 2:]


def client_process(host: str, port: int, auth: str, count: int, conn, target, drain: float) -> None:
    """Open `count` followers, say so, collect until each has `target` events once that is set (or `drain`
    seconds later), send [{event id: latency} per follower]."""

    async def main() -> None:
        opened = [0]
        results: list[dict[str, float]] = [{} for _ in range(count)]
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(follow_raw(host, port, auth, results[i], opened)))
            if i % 25 == 24:
                await asyncio.sleep(0.1)  # a connection storm is not what is measured
        deadline = time.monotonic() + 120
        while opened[0] < count and time.monotonic() < deadline:
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                conn.send(("error", repr(failed[0].exception())))
                return
            await asyncio.sleep(0.05)
        conn.send(("opened", opened[0]))
        while target.value == 0:
            await asyncio.sleep(0.05)
        # Published: wait until every follower has every event, or the drain deadline.
        deadline = time.monotonic() + drain
        while min(len(r) for r in results) < target.value and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send(("done", results))

    asyncio.run(main())


# --- the system's processes ---------------------------------------------------------------------------

def api_and_worker(system: System) -> tuple[int, int]:
    pids = descendants(system.process.pid)
    api = [p for p in pids if role(p) == "api"]
    worker = [p for p in pids if role(p) == "worker"]
    if not api or not worker:
        raise BenchError("could not find the API and worker processes of agentmem up")
    # The worker's main process execs dramatiq, whose worker child does the work: take the largest.
    return api[0], max(worker, key=rss_mb)


def start_baseline_api(api_pid: int, port: int, log_path: Path) -> subprocess.Popen:
    """A second API process like the first (same environment: database, Redis, secret) but without the hub."""
    raw = Path(f"/proc/{api_pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    env["AGENTMEM_EVENT_HUB"] = "false"
    log = open(log_path, "wb")  # the child writes to it
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", str(port)], env=env,
                            cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=3) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"the baseline API exited with {proc.returncode}; see {log_path}")
            # Ready, and done loading the embedding model (it does so in the background at start-up), so the
            # load does not land in the first phase.
            if b"loaded embedding model" in log_path.read_bytes():
                try:
                    if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        return proc
                except httpx.TransportError:
                    pass
            time.sleep(0.3)
    raise BenchError("the baseline API did not start within 120 s")


def open_streams(url: str, headers: dict[str, str]) -> float:
    text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
    match = re.search(r'^agentmem_open_streams\{transport="sse"\} ([0-9.e+]+)$', text, flags=re.M)
    return float(match[1]) if match else 0.0


def hub_readers(url: str, headers: dict[str, str]) -> float:
    text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
    match = re.search(r"^agentmem_event_hub_readers ([0-9.e+]+)$", text, flags=re.M)
    return float(match[1]) if match else 0.0


# --- one phase --------------------------------------------------------------------------------------

async def publish_and_time(redis_url: str, org_id: str, events: int, rate: float) -> tuple[list[str], list[float]]:
    """XADD `events` events at `rate`/s to the org stream; a raw XREAD client times them too. Returns their org
    stream ids (as the followers see them: not the job stream's, which `publish` returns) and the raw latencies."""
    from core import events as stream_events
    from core.redis import close_redis, set_redis_url
    from schemas.enums import EventType

    set_redis_url(redis_url)
    key = stream_events.org_stream(org_id)
    raw: list[float] = []
    ids: list[str] = []
    position = await stream_events.last_id(key)

    async def raw_reader() -> None:
        nonlocal position
        while len(raw) < events:
            for _, event in await stream_events.read({key: position}, block_ms=1000):
                raw.append(time.time() - event.ts)
                ids.append(event.id)
                position = event.id

    reader = asyncio.create_task(raw_reader())
    job_id = uuid.uuid4()
    start = time.monotonic()
    for i in range(events):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await stream_events.publish(EventType.PROGRESS, job_id=job_id, org_id=org_id,
                                    data={"done": i, "total": events, "message": "fan-out probe"})
    await asyncio.wait_for(reader, 30)
    await close_redis()
    return ids, raw


def run_phase(label: str, url: str, headers: dict[str, str], redis_url: str, org_id: str, followers: int,
              processes: int, events: int, rate: float, api_pid: int, worker_pid: int, drain: float = 60) -> dict:
    host, port = url.removeprefix("http://").split(":")
    ctx = mp.get_context("spawn")
    target = ctx.Value("i", 0)
    shares = [followers // processes + (1 if i < followers % processes else 0) for i in range(processes)]
    rest = {"api_rss": rss_mb(api_pid), "worker_rss": rss_mb(worker_pid)}
    pipes, procs = [], []
    for share in shares:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_process, args=(host, int(port), headers["Authorization"], share, child, target,
                                                          drain))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    try:
        for parent in pipes:
            if not parent.poll(150):
                raise BenchError(f"{label}: a client process did not open its followers within 150 s")
            kind, value = parent.recv()
            if kind != "opened":
                raise BenchError(f"{label}: a client process failed: {value}")
        deadline = time.monotonic() + 60
        while open_streams(url, headers) < followers:
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: the API reports fewer than {followers} open streams")
            time.sleep(0.2)
        time.sleep(1.0)  # let every follower reach its wait
        readers = hub_readers(url, headers)
        cpu0, t0 = cpu_seconds(api_pid), time.monotonic()
        peak = {"api": rss_mb(api_pid), "worker": rss_mb(worker_pid)}
        sampling = {"on": True}

        def sample() -> None:
            while sampling["on"]:
                peak["api"] = max(peak["api"], rss_mb(api_pid))
                peak["worker"] = max(peak["worker"], rss_mb(worker_pid))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        ids, raw = asyncio.run(publish_and_time(redis_url, org_id, events, rate))
        target.value = events
        received: list[dict[str, float]] = []
        for parent in pipes:
            if not parent.poll(drain + 60):
                raise BenchError(f"{label}: a client process did not report within 120 s")
            kind, value = parent.recv()
            received.extend(value)
        cpu1, t1 = cpu_seconds(api_pid), time.monotonic()  # publishing and delivering every event
        sampling["on"] = False
        sampler.join()
    finally:
        target.value = max(target.value, 1)
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    wanted = set(ids)
    latencies = [lat for got in received for eid, lat in got.items() if eid in wanted]
    complete = sum(1 for got in received if wanted <= set(got))
    if received and complete < len(received):
        missing = [i for i, eid in enumerate(ids) if eid not in received[0]]
        print(f"  follower 0 missed events at positions {missing[:10]} of {len(ids)}", flush=True)
    return {"label": label, "followers": followers, "latencies": latencies, "raw": raw, "complete": complete,
            "api_cpu": (cpu1 - cpu0) / (t1 - t0), "api_cpu_s": cpu1 - cpu0, "window": t1 - t0,
            "api_rss_rest": rest["api_rss"], "api_rss_peak": peak["api"],
            "worker_rss_rest": rest["worker_rss"], "worker_rss_peak": peak["worker"], "readers": readers}


def ms(values: list[float], p: float) -> str:
    return f"{percentile([v * 1000 for v in values], p):.1f}" if values else "nan"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--followers", default="100,1000", help="follower counts, comma-separated (default 100,1000)")
    parser.add_argument("--events", type=int, default=150, help="events published per phase (default 150)")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second (default 10)")
    parser.add_argument("--client-processes", type=int, default=4, help="processes holding the followers (default 4)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    args = parser.parse_args()
    counts = [int(c) for c in args.followers.split(",")]

    print(f"before: {machine_load()}", flush=True)
    system = System(workers=1, keep_data=args.keep_data)
    baseline_port = free_port()

    def work() -> list[dict]:
        api_pid, worker_pid = api_and_worker(system)
        orgs = httpx.get(system.url + "/api/v1/organizations", headers=system.headers, timeout=30)
        orgs.raise_for_status()
        org_id = orgs.json()[0]["id"]
        raw_env = Path(f"/proc/{api_pid}/environ").read_bytes().split(b"\0")
        redis_url = next(i.decode().split("=", 1)[1] for i in raw_env if i.startswith(b"AGENTMEM_REDIS_URL="))
        baseline = start_baseline_api(api_pid, baseline_port, system.data_dir / "baseline-api.log")
        baseline_url = f"http://127.0.0.1:{baseline_port}"
        results = []
        try:
            for followers in counts:
                for label, url, pid in (("per-follower XREAD (hub off)", baseline_url, baseline.pid),
                                        ("event hub", system.url, api_pid)):
                    print(f"{label}: {followers} followers over {args.client_processes} client processes, "
                          f"{args.events} events at {args.rate:g}/s ...", flush=True)
                    results.append(run_phase(label, url, system.headers, redis_url, org_id, followers,
                                             args.client_processes, args.events, args.rate, pid, worker_pid))
        finally:
            baseline.send_signal(signal.SIGINT)
            try:
                baseline.wait(30)
            except subprocess.TimeoutExpired:
                baseline.kill()
        return results

    results, failed = run_against(system, work)
    problems = []
    rows = []
    for r in results or []:
        rows.append([r["followers"], r["label"], len(r["latencies"]), ms(r["latencies"], 50), ms(r["latencies"], 99),
                     f"{max(r['latencies']) * 1000:.1f}" if r["latencies"] else "nan",
                     ms(r["raw"], 50), ms(r["raw"], 99), f"{r['api_cpu'] * 100:.0f}%",
                     f"{r['api_cpu_s']:.1f} / {r['window']:.0f}",
                     f"{r['api_rss_rest']:.0f} / {r['api_rss_peak']:.0f}",
                     f"{r['worker_rss_rest']:.0f} / {r['worker_rss_peak']:.0f}", f"{r['readers']:.0f}"])
        if r["complete"] != r["followers"]:
            problems.append(f"{r['label']}, {r['followers']} followers: only {r['complete']} received every event")
    if rows:
        print("\n" + table(["followers", "API", "samples", "p50 ms", "p99 ms", "max ms", "raw XREAD p50",
                            "raw XREAD p99", "API CPU", "API CPU s / wall s", "API RSS MB rest/peak",
                            "worker RSS MB rest/peak", "hub readers"], rows))
        by = {(r["followers"], r["label"]): r for r in results}
        for followers in counts:
            old, new = by.get((followers, "per-follower XREAD (hub off)")), by.get((followers, "event hub"))
            if old and new and old["latencies"] and new["latencies"]:
                print(f"{followers} followers: p99 hub / per-follower = "
                      f"{percentile(new['latencies'], 99) / percentile(old['latencies'], 99):.2f}; "
                      f"API CPU seconds hub / per-follower = {new['api_cpu_s'] / max(old['api_cpu_s'], 1e-9):.2f}")
    return finish_run(system, failed, problems)


if __name__ == "__main__":
    sys.exit(main())
