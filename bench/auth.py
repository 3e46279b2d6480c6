"""Authentication cost: what checking credentials, rate limits and the audit log adds to a request.

    python bench/auth.py [--requests 500] [--concurrency 8] [--seconds 5]

Against `agentmem up` (embedded default), in one run:
1. `GET /healthz` (no credentials, no database): the baseline of the HTTP stack itself.
2. `GET /api/v1/memories/{id}` with an API key (key lookup by prefix + hash, rate-limit script in Redis).
3. The same with a signed-in user's access token (JWT verify, revocation check in Redis, membership).
4. `PATCH /api/v1/memories/{id}` (metadata only, no job) with the API key: adds the row update and
   the audit row written before the response.
Each is timed sequentially (`--requests` requests: p50/p99 latency) and with `--concurrency`
clients for `--seconds` (throughput). Ratios are against the baseline of the same run.
Then (unless `--no-cache-off`) the same cases on a second system started with
`AGENTMEM_API_KEY_CACHE_SECONDS=0`, every API key looked up in PostgreSQL, as before the key cache.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchError, System, finish_run, machine_load, percentile, run_against, table  # noqa: E402


async def signed_in_user(client: httpx.AsyncClient, owner: dict[str, str]) -> dict[str, str]:
    """Register a user, make them a member of the key's organization, sign in; their headers."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    password = "bench passphrase 1234"
    response = await client.post("/api/v1/auth/register", json={"username": name, "password": password})
    if response.status_code != 201:
        raise BenchError(f"register answered {response.status_code}: {response.text[:300]}")
    org_id = (await client.get("/api/v1/organizations", headers=owner)).json()[0]["id"]
    added = await client.post(f"/api/v1/organizations/{org_id}/members", headers=owner,
                              json={"username": name, "role": "member"})
    if added.status_code != 201:
        raise BenchError(f"adding the member answered {added.status_code}: {added.text[:300]}")
    login = await client.post("/api/v1/auth/login", json={"username": name, "password": password,
                                                          "organization_id": org_id})
    if login.status_code != 200:
        raise BenchError(f"login answered {login.status_code}: {login.text[:300]}")
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def one_memory(client: httpx.AsyncClient, headers: dict[str, str], timeout: float = 120) -> str:
    """Store one memory and return its id once its job has succeeded."""
    job = (await client.post("/api/v1/memories", headers=headers,
                             json={"items": [{"content": "The benchmark user likes green tea."}],
                                   "user_id": f"bench-{uuid.uuid4().hex[:8]}"})).json()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = (await client.get(f"/api/v1/jobs/{job['id']}", headers=headers)).json()
        if row["status"] == "succeeded":
            listed = (await client.get("/api/v1/memories", headers=headers, params={"limit": 1})).json()
            return listed["items"][0]["id"]
        if row["status"] in ("failed", "cancelled"):
            raise BenchError(f"setup job {row['status']}: {row.get('error')}")
        await asyncio.sleep(0.1)
    raise BenchError("setup job did not finish")


async def sequential(client: httpx.AsyncClient, method: str, path: str, headers: dict, body: dict | None,
                     n: int) -> list[float]:
    """Latency of `n` requests one after another (seconds each); any non-2xx fails the run."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = await client.request(method, path, headers=headers, json=body)
        times.append(time.perf_counter() - t0)
        if response.status_code >= 300:
            raise BenchError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
    return times


async def throughput(client: httpx.AsyncClient, method: str, path: str, headers: dict, body: dict | None,
                     concurrency: int, seconds: float) -> float:
    """Requests per second with `concurrency` clients for `seconds`."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            response = await client.request(method, path, headers=headers, json=body)
            if response.status_code >= 300:
                raise BenchError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return done / (time.monotonic() - t0)


async def measure(system: System, requests: int, concurrency: int, seconds: float) -> list[list[object]]:
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=system.url, timeout=30, limits=limits) as client:
        key = system.headers
        user = await signed_in_user(client, key)
        memory = await one_memory(client, key)
        cases = [
            ("GET /healthz, no credentials (baseline)", "GET", "/healthz", {}, None),
            ("GET memory, API key", "GET", f"/api/v1/memories/{memory}", key, None),
            ("GET memory, access token (JWT)", "GET", f"/api/v1/memories/{memory}", user, None),
            ("PATCH memory metadata, API key (+ audit row)", "PATCH", f"/api/v1/memories/{memory}", key,
             {"metadata": {"bench": True}}),
        ]
        rows, base_p50, base_rps = [], None, None
        for label, method, path, headers, body in cases:
            await sequential(client, method, path, headers, body, 20)  # warm connections and caches
            times = [t * 1000 for t in await sequential(client, method, path, headers, body, requests)]
            rps = await throughput(client, method, path, headers, body, concurrency, seconds)
            p50 = percentile(times, 50)
            base_p50, base_rps = base_p50 or p50, base_rps or rps
            rows.append([label, len(times), f"{p50:.2f}", f"{percentile(times, 99):.2f}", f"{p50 / base_p50:.2f}",
                         f"{rps:.0f}", f"{rps / base_rps:.2f}"])
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per case (default 500)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients for throughput (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of throughput per case (default 5)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for agentmem up (default 1)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir and log")
    parser.add_argument("--no-cache-off", action="store_true",
                        help="skip the second system without the API key cache")
    args = parser.parse_args()

    print(f"before: {machine_load()}", flush=True)
    runs = [("", {})]
    if not args.no_cache_off:
        runs.append((" [key cache off]", {"AGENTMEM_API_KEY_CACHE_SECONDS": "0"}))
    all_rows, status = [], 0
    for suffix, env in runs:
        system = System(workers=args.workers, keep_data=args.keep_data, env=env)
        rows, failed = run_against(system, lambda system=system: asyncio.run(
            measure(system, args.requests, args.concurrency, args.seconds)))
        all_rows += [[row[0] + suffix, *row[1:]] for row in rows or []]
        status = finish_run(system, failed, []) or status
    if all_rows:
        print()
        print(table(["case", "requests", "p50 ms", "p99 ms", "p50 ×base", f"req/s ({args.concurrency} clients)",
                     "req/s ×base"], all_rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
