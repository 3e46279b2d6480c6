"""The ingest worker's store step on its own: client CPU and wall time per memory, by batch size.

    python bench/store_rows.py [--n 2000] [--rounds 2] [--compare-tree DIR]

An embedded PostgreSQL of its own (no `agentmem up`: only this process's CPU is measured), migrated,
one organization. For each batch size (1, 16, 256 memories, each with a 384-dimension vector and no
extra passages) `--n` memories are stored in batches through `pipelines.memories.ingest._store_rows`
(memories, their version 1, their passages: the statements an ingest job runs per chunk) and
committed, after one warm-up batch. Printed per case: this process's CPU (user + system) and wall time
per memory. With `--compare-tree DIR` the same cases run in a child process on another checkout's code
(same server), alternately, per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
BATCHES = (1, 16, 256)
DIMENSIONS = 384


def unit_vector(rng: random.Random) -> list[float]:
    values = [rng.gauss(0, 1) for _ in range(DIMENSIONS)]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


def cpu_seconds() -> float:
    """This process's CPU time, user + system (here, not from bench.common: the child may run another
    checkout's code, whose bench/common.py may differ)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(database_url: str, n: int) -> dict[str, tuple[float, float]]:
    """Per batch size: (CPU ms, wall ms) per memory, in this process, on the code this process imported."""
    from sqlalchemy import text

    from core.db import dispose_engine, session_scope, set_database_url
    from pipelines.memories import ingest, passages

    set_database_url(database_url)
    org = uuid.uuid4()
    async with session_scope() as session:
        await session.execute(text("INSERT INTO organizations (id, name, name_key) VALUES (:i, :n, :n)"),
                              {"i": org, "n": f"bench-{org.hex[:8]}"})
        await session.commit()
    rng = random.Random(7)
    vectors = [unit_vector(rng) for _ in range(256)]

    async def store(size: int) -> None:
        job = SimpleNamespace(id=uuid.uuid4(), org_id=org, actor="bench")
        items = [{"content": f"memory {job.id.hex[:8]} {i}: the user prefers window seats on long flights",
                  "user_id": "bench-user", "metadata": {"n": i}} for i in range(size)]
        embedded = [passages.Embedded(vectors[i % len(vectors)], []) for i in range(size)]
        chunk = list(range(size))
        async with session_scope() as session:
            await ingest._store_rows(session, job, *ingest.memory_rows(job, items, chunk, embedded))
            await session.commit()

    results = {}
    for size in BATCHES:
        await store(size)
        batches = max(1, n // size)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for _ in range(batches):
            await store(size)
        stored = batches * size
        results[f"batches of {size}"] = (1000 * (cpu_seconds() - cpu0) / stored,
                                         1000 * (time.perf_counter() - wall0) / stored)
    await dispose_engine()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="memories per batch size (default 2000)")
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
    for side, round_, results in rounds_on_embedded_postgres(Path(__file__).resolve(), "agentmem-bench-store-",
                                                             args.n, args.rounds, args.compare_tree):
        for name, (cpu, wall) in results.items():
            rows.append((side, round_, name, f"{cpu:.3f}", f"{wall:.3f}"))
    print(table(["code", "round", "case", "client CPU ms/memory", "wall ms/memory"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
