"""The quota check's client-side CPU per job submission, against a bare statement in the same run.

    python bench/quota_check.py [--n 400] [--rounds 2] [--compare-tree DIR]

An embedded PostgreSQL of its own (no `agentmem up`: only this process's CPU is measured), migrated,
one organization. Each case opens a session, runs its statements and rolls back, `--n` times after 20
warm-ups; printed: this process's CPU (user + system) and wall time per case, and each case's CPU less
the `SELECT 1` baseline's (what the check itself costs the API). The check is
`pipelines.accounts.limits.check_job_quotas`: for a memory-writing job the quota lock with the limits,
then the counts; for another job the limits with the counts. With `--compare-tree DIR` the same cases
run in a child process on another checkout's code (same server), alternately, per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    """This process's CPU time, user + system (here, not from bench.common: the child may run another
    checkout's code, whose bench/common.py may differ)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(database_url: str, n: int) -> dict[str, tuple[float, float]]:
    """Per case: (CPU ms, wall ms) per call, in this process, on the code this process imported."""
    from sqlalchemy import text

    from core.db import dispose_engine, session_scope, set_database_url
    from pipelines.accounts import limits
    from schemas.enums import JobKind

    set_database_url(database_url)
    org = uuid.uuid4()
    async with session_scope() as session:
        await session.execute(text("INSERT INTO organizations (id, name, name_key) VALUES (:i, :n, :n)"),
                              {"i": org, "n": f"bench-{org.hex[:8]}"})
        await session.commit()

    async def select_one(session) -> None:
        await session.execute(text("SELECT 1"))

    async def quota_write(session) -> None:
        await limits.check_job_quotas(session, org, JobKind.INGEST_MEMORIES, 1)

    async def quota_other(session) -> None:
        await limits.check_job_quotas(session, org, JobKind.AGENT_TURN, 1)

    results = {}
    for name, case in (("session + SELECT 1 (baseline)", select_one),
                       ("check_job_quotas, memory-writing job", quota_write),
                       ("check_job_quotas, other job", quota_other)):
        for _ in range(20):
            async with session_scope() as session:
                await case(session)
                await session.rollback()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for _ in range(n):
            async with session_scope() as session:
                await case(session)
                await session.rollback()
        results[name] = (1000 * (cpu_seconds() - cpu0) / n, 1000 * (time.perf_counter() - wall0) / n)
    await dispose_engine()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="calls per case (default 400)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each side (default 2)")
    parser.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="also run the cases on another checkout's code (this script, that code)")
    parser.add_argument("--child", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path.cwd() if args.child else REPO))
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.n))))
        return 0

    from bench.common import rounds_on_embedded_postgres, table

    rows = []
    for side, round_, results in rounds_on_embedded_postgres(Path(__file__).resolve(), "agentmem-bench-quota-",
                                                             args.n, args.rounds, args.compare_tree):
        base_cpu = results["session + SELECT 1 (baseline)"][0]
        for name, (cpu, wall) in results.items():
            rows.append((side, round_, name, f"{cpu:.2f}", f"{wall:.2f}", f"{cpu - base_cpu:+.2f}"))
    print(table(["code", "round", "case", "CPU ms/call", "wall ms/call", "CPU ms beyond baseline"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
