"""Search latency at scale: p50/p99 of POST /api/v1/memories/search with 100,000 memories in one organization.

    python bench/search_latency.py [--memories 100000] [--real 5000] [--queries 200] [--data-dir DIR]
                                   [--env AGENTMEM_X=Y ...] [--compare-env AGENTMEM_X=Y ...] [--compare-tree DIR]

`agentmem up` runs on the embedded default; the memories are then seeded straight into its
PostgreSQL with COPY (the ingest pipeline has its own benchmark, bench/ingest.py): distinct synthetic
sentences; `--real` of them embedded with the local model, the rest given the embedding of a real
sentence plus Gaussian noise (σ 0.02 per dimension, re-normalised), so the vectors form realistic
clusters without embedding 100,000 texts first. Every third memory is seeded as a long one with
passages (`--passages`, noisy copies of its vector), where the schema has them. Then `--queries`
searches (other synthetic sentences, each embedded by the API: query embedding included) per mode,
org-wide and within one user's scope of ~1% of the rows, one client at a time: the table and indexes prewarmed into
PostgreSQL's cache (pg_prewarm), each series after 20 unmeasured warm-up searches. The medians of
the stages the server reports in its Server-Timing headers (auth, scope, text, embed, vector,
feedback, load) show where the time goes. Finally EXPLAIN ANALYZE of the statements the pipeline
builds shows the vector query on the HNSW index and the text query on the GIN index org-wide, and
both reading the small scope through its b-tree. `--data-dir DIR` keeps the seeded data for the
next run. With `--compare-env` or `--compare-tree`, a second system (other settings, or another checkout's
code) on its own copy of the same data (kept beside DIR as DIR-compared) is measured too: the two alternate
in `--rounds` slices on the same queries, so both see the same machine, and each row is printed per system.
Target: p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
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
from core.embedder import model_identity
from core.settings import get_settings
from core.timing import parse_header

SCOPE = "bench-scope"


class Explain(Executable, ClauseElement):
    """`EXPLAIN ANALYZE <statement>`, with the statement's parameters bound as SQLAlchemy binds them."""

    inherit_cache = False

    def __init__(self, statement) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler, **kw) -> str:
    sql = compiler.process(element.statement, **kw)
    # The plan's one column, not the columns a textual statement (BM25's) declares, is what comes back.
    compiler._textual_ordered_columns = False
    return "EXPLAIN (ANALYZE, BUFFERS OFF) " + sql


def embeddings(texts: list[str], real: int, seed: int = 11) -> np.ndarray:
    """Real MiniLM vectors for the first `real` texts; noisy copies of them for the rest."""
    from core.embedder import get_embedder

    async def embed_real() -> list[list[float]]:
        return await get_embedder().embed(texts[:real])

    base = np.asarray(asyncio.run(embed_real()), dtype=np.float32)
    rng = np.random.default_rng(seed)
    rest = base[rng.integers(0, real, len(texts) - real)] + rng.normal(0, 0.02, (len(texts) - real, base.shape[1]))
    vectors = np.vstack([base, rest.astype(np.float32)])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _vector(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in vector) + "]"


async def _has_model_column(conn) -> bool:
    """Whether the schema records each vector's model (migration 0012)."""
    return bool(await conn.fetchval("SELECT 1 FROM information_schema.columns WHERE table_name = 'memories' "
                                    "AND column_name = 'embedding_model'"))


CHUNK = 50_000  # rows per COPY: the text of a million vectors is never held at once


async def _secondary_indexes(conn, table: str) -> list[tuple[str, str]]:
    """The table's indexes that back no constraint (HNSW, GIN, b-trees): name and definition."""
    rows = await conn.fetch(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = $1 AND NOT x.indisunique AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) ORDER BY i.relname", table)
    return [(r[0], r[1]) for r in rows]


async def seed(dsn: str, org_id: str, texts: list[str], vectors: np.ndarray, scoped: int, passages: float,
               seed_: int = 13) -> int:
    """COPY the memories in; the first `scoped` belong to user `bench-scope`, the rest to 100 other users.
    Every third memory is a long one with `3 × passages` more passages (noisy copies of its vector, σ 0.03),
    where the schema has passages; returns how many passages were seeded.

    Into empty tables this is a bulk load as an operator would do one: the secondary indexes (HNSW, GIN,
    b-trees) are dropped, the rows copied in chunks, and the indexes built again from their own
    definitions with a large `maintenance_work_mem` (pgvector builds HNSW in parallel then), instead of
    inserting each row into the graph (~1.8 ms of CPU a row)."""
    import asyncpg

    rng = np.random.default_rng(seed_)
    conn = await asyncpg.connect(dsn)
    try:
        has_passages = await conn.fetchval("SELECT to_regclass('memory_passages') IS NOT NULL")
        tables = ["memories", "memory_passages"] if has_passages else ["memories"]
        dropped: list[tuple[str, str]] = []
        for name in tables:
            if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):
                for index, definition in await _secondary_indexes(conn, name):
                    await conn.execute(f'DROP INDEX "{index}"')
                    dropped.append((index, definition))
        per_long = round(3 * passages)
        # Search compares a query only with vectors of its own model: the seeded ones are the service's model's.
        tail = f"\t{model_identity()}" if await _has_model_column(conn) else ""
        model_column = ["embedding_model"] if tail else []
        n_passages = 0
        for lo in range(0, len(texts), CHUNK):
            buffer, extra = io.StringIO(), io.StringIO()
            for i in range(lo, min(lo + CHUNK, len(texts))):
                text, vector = texts[i], vectors[i]
                user = SCOPE if i < scoped else f"bench-user-{i % 100}"
                digest = uuid.uuid5(uuid.NAMESPACE_OID, text).hex
                clean = text.replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")
                memory_id = uuid.uuid4()
                buffer.write(f"{memory_id}\t{org_id}\t{user}\t{clean}\t{{\"i\": {i}}}\t{digest}\t{_vector(vector)}\t"
                             f"{digest}{tail}\n")
                if has_passages and per_long and i % 3 == 0:
                    noisy = vector + rng.normal(0, 0.03, (per_long, vector.shape[0]))
                    for k, p in enumerate(noisy / np.linalg.norm(noisy, axis=1, keepdims=True)):
                        extra.write(f"{memory_id}\t{k + 1}\t{org_id}\t{digest}\t{_vector(p)}{tail}\n")
                        n_passages += 1
            await conn.copy_to_table("memories", source=io.BytesIO(buffer.getvalue().encode()), columns=[
                "id", "org_id", "user_id", "content", "metadata", "content_hash", "embedding", "embedded_hash",
                *model_column])
            if extra.tell():
                await conn.copy_to_table("memory_passages", source=io.BytesIO(extra.getvalue().encode()), columns=[
                    "memory_id", "ord", "org_id", "content_hash", "embedding", *model_column])
            if len(texts) > CHUNK:
                print(f"  copied {min(lo + CHUNK, len(texts))}/{len(texts)} memories", flush=True)
        if dropped:
            started = time.monotonic()
            await conn.execute("SET maintenance_work_mem = '4GB'")
            await conn.execute("SET max_parallel_maintenance_workers = 2")
            for _index, definition in dropped:
                await conn.execute(definition)
            print(f"  built {len(dropped)} indexes after the load in {time.monotonic() - started:.0f} s", flush=True)
        # As autovacuum would soon after a bulk load (a vacuum running mid-measurement would skew it).
        for name in reversed(tables):
            await conn.execute(f"VACUUM ANALYZE {name}")
        return n_passages
    finally:
        await conn.close()


async def prewarm(dsn: str) -> None:
    """Load the table and its indexes into PostgreSQL's buffer cache, as a service in use has them
    (the system was just started: its cache is empty, and 20 warm-up searches touch a fraction)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        relations = ["memories", "ix_memories_embedding", "ix_memories_fts", "ix_memories_org_user"]
        if await conn.fetchval("SELECT to_regclass('memory_passages') IS NOT NULL"):
            relations += ["memory_passages", "memory_passages_pkey", "ix_memory_passages_embedding"]
        for relation in relations:
            await conn.execute("SELECT pg_prewarm($1)", relation)
    finally:
        await conn.close()


def _short(line: str, width: int = 150) -> str:
    """A plan line without the 384 numbers of the query vector."""
    return line if len(line) <= width else line[:width] + " …"


async def explain(dsn: str, org_id: str, query_vector: list[float], query_text: str, scoped: bool) -> list[str]:
    """EXPLAIN ANALYZE of the statements the search pipeline builds for one query (vector and text)."""
    from core.db import dispose_engine, session_scope, set_database_url
    from pipelines.memories import fulltext, search
    from pipelines.memories.filters import search_clauses
    from schemas.search import MemorySearchIn

    set_database_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    settings = get_settings()
    org = uuid.UUID(org_id)
    lines = []
    try:
        async with session_scope() as session:
            clauses = search_clauses(org, MemorySearchIn(query=query_text, **({"user_id": SCOPE} if scoped else {})))
            n_scope, _ = await fulltext.scope_size(session, org, clauses, settings.search_scope_count_max)
            statements = [("vector", await search.vector_statement(session, query_vector, clauses, 50, n_scope)),
                          ("text", await fulltext.bm25_statement(session, query_text, clauses, 50, n_scope))]
            for name, statement in statements:
                plan = await session.execute(Explain(statement))
                lines += [f"{name} ({'one user' if scoped else 'whole organization'}, {n_scope} memories):"]
                lines += ["  " + _short(row[0]) for row in plan]
    finally:
        await dispose_engine()
    return lines


STAGES = ("auth", "scope", "text", "embed", "embed_wait", "vector", "feedback", "text_feedback", "recency", "load",
          "app")
WARM_UP = 20


SERIES = (("vector", {}), ("text", {}), ("hybrid", {}), ("hybrid", {"feedback": False}))


def series_label(mode: str, extra: dict, scoped: bool) -> str:
    return f"{mode}{' without feedback' if extra else ''}, {'one user (~1%)' if scoped else 'whole organization'}"


async def measure(system: System, queries: list[str], scoped: bool, warm_up: bool,
                  into: dict[str, tuple[list[float], dict[str, list[float]]]]) -> None:
    """Each series' client-side times and Server-Timing stages for `queries`, added to `into` by series.

    With `warm_up`, the first WARM_UP queries of each series are not measured: they bring the pages of the
    indexes they touch into memory, as a service in use has them. The last series is hybrid without vector
    feedback (its feedback pass is one more index scan): what the default's feedback costs, in the same run."""
    async with httpx.AsyncClient(base_url=system.url, headers=system.headers, timeout=60) as client:
        for mode, extra in SERIES:
            times, stages = into.setdefault(series_label(mode, extra, scoped), ([], {}))
            for i, q in enumerate(queries):
                body = {"query": q, "mode": mode, "top_k": 10} | extra | ({"user_id": SCOPE} if scoped else {})
                t0 = time.perf_counter()
                response = await client.post("/api/v1/memories/search", json=body)
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 200:
                    raise BenchError(f"search answered {response.status_code}: {response.text[:300]}")
                if warm_up and i < WARM_UP:
                    continue
                times.append(elapsed)
                for name, ms in parse_header(response.headers.get("server-timing", "")).items():
                    stages.setdefault(name, []).append(ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=5_000, help="memories embedded for real (default 5000)")
    parser.add_argument("--queries", type=int, default=200, help="searches per mode and scope (default 200)")
    parser.add_argument("--passages", type=float, default=1.0, help="passages beyond the first per memory, on "
                        "average (every third memory is long; default 1.0: 100,000 passages at 100,000 memories)")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--data-dir", type=Path, help="keep the system's data here; run again with the same "
                                                      "DIR to skip embedding and seeding")
    parser.add_argument("--env", action="append", default=[], metavar="AGENTMEM_X=Y",
                        help="a setting for the system (repeatable), e.g. AGENTMEM_EMBEDDING_QUERY_RUNTIME=torch")
    parser.add_argument("--compare-env", action="append", default=None, metavar="AGENTMEM_X=Y",
                        help="also run a second system with these settings (over --env), on its own copy of the "
                             "data, the two alternating in --rounds slices (repeatable)")
    parser.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="the second system runs the code of this checkout (a same-run baseline of old code)")
    parser.add_argument("--rounds", type=int, default=4, help="slices a comparison alternates in (default 4)")
    args = parser.parse_args()

    print(f"before: {machine_load()}", flush=True)
    texts = synthetic_corpus(args.memories + args.queries + WARM_UP, seed=23)
    corpus, queries = texts[:args.memories], texts[args.memories:]
    systems = {"this": System.on(args.data_dir, workers=1, keep_data=args.keep_data)}
    systems["this"].env.update(setting(args.env))
    if args.compare_env is not None or args.compare_tree is not None:
        # Its own data dir, seeded the same way; beside --data-dir and kept with it, else temporary.
        other = System.on(args.data_dir.with_name(args.data_dir.name + "-compared") if args.data_dir else None,
                          workers=1, keep_data=args.keep_data)
        other.env.update(setting(args.env) | setting(args.compare_env or []))
        if args.compare_tree is not None:
            other.repo = args.compare_tree.resolve()
        label = ", ".join(filter(None, [f"code of {args.compare_tree}" if args.compare_tree else "",
                                        " ".join(args.compare_env or [])]))
        systems[f"compared ({label})"] = other
    rounds = args.rounds if len(systems) > 1 else 1

    def marker(system: System) -> Path | None:
        return (system.data_dir / f"search-latency-seeded-{args.memories}-{args.real}-{args.passages}"
                if system.keep_data else None)

    vectors = None
    if any(marker(system) is None or not marker(system).exists() for system in systems.values()):
        t0 = time.monotonic()
        vectors = embeddings(corpus, min(args.real, len(corpus)))
        print(f"embedded {min(args.real, len(corpus))} texts (+ noisy copies) in {time.monotonic() - t0:.0f} s",
              flush=True)

    def work() -> tuple[dict, list[str]]:
        from core.servers import EmbeddedPostgres

        orgs = {}
        for name, system in systems.items():
            dsn = EmbeddedPostgres(system.data_dir).running_url()
            orgs[name] = httpx.get(system.url + "/api/v1/organizations", headers=system.headers).json()[0]["id"]
            done = marker(system)
            if done is not None and done.exists():
                print(f"seeding: skipped, reusing the memories already in {system.data_dir}", flush=True)
            else:
                t0 = time.monotonic()
                n_passages = asyncio.run(seed(dsn, orgs[name], corpus, vectors, scoped=max(1, args.memories // 100),
                                              passages=args.passages))
                print(f"seeded {args.memories} memories and {n_passages} passages into {name} in "
                      f"{time.monotonic() - t0:.0f} s", flush=True)
                if done is not None:
                    done.touch()
            asyncio.run(prewarm(dsn))
        # Slice by slice, the systems alternating on the same queries: both see the same machine.
        measured = queries[WARM_UP:]
        size = -(-len(measured) // rounds)
        results: dict[str, dict] = {name: {} for name in systems}
        for r in range(rounds):
            for scoped in (False, True):
                for name, system in systems.items():
                    batch = (queries[:WARM_UP] if r == 0 else []) + measured[r * size:(r + 1) * size]
                    asyncio.run(measure(system, batch, scoped, r == 0, results[name]))
        dsn = EmbeddedPostgres(systems["this"].data_dir).running_url()
        query_vector = embeddings([queries[0]], 1)[0].tolist()
        plans = [line for scoped in (False, True)
                 for line in asyncio.run(explain(dsn, orgs["this"], query_vector, queries[0], scoped))]
        return results, plans

    out, failed = run_against_all(list(systems.values()), work)
    results, plans = out or ({}, [])
    if results:
        named = len(systems) > 1
        rows, stages = [], []
        for label in [series_label(m, e, s) for s in (False, True) for m, e in SERIES]:
            for name in systems:
                times, by_stage = results[name][label]
                first = ([name] if named else []) + [label]
                rows.append(first + [len(times), f"{percentile(times, 50):.1f}", f"{percentile(times, 99):.1f}",
                                     f"{max(times):.1f}"])
                stages.append(first + [f"{percentile(by_stage[s], 50):.1f}" if s in by_stage else "-"
                                       for s in STAGES])
        head = ["system"] if named else []
        print(f"\n{args.memories} memories in one organization; one client; query embedding included"
              f"{'; settings ' + ', '.join(args.env) if args.env else ''}"
              f"{f'; {len(systems)} systems alternating in {rounds} slices on the same queries' if named else ''}\n")
        print(table(head + ["search", "requests", "p50 ms", "p99 ms", "max ms"], rows))
        print("\nwhere the time goes: the server's Server-Timing, median ms per stage (auth includes the rate "
              "limit; embed runs alongside scope and text, embed_wait is what the vector side waited for it; app "
              "is the whole request in the server)\n")
        print(table(head + ["search"] + list(STAGES), stages))
        print("\nquery plans of 'this' (EXPLAIN ANALYZE):")
        print("\n".join(plans))
        uses = {"HNSW index (whole organization)": any("ix_memories_embedding" in p for p in plans),
                "GIN index (whole organization)": any("ix_memories_fts" in p for p in plans)}
        print("\n" + ", ".join(f"{k}: {'used' if v else 'NOT used'}" for k, v in uses.items()))
    for system in list(systems.values())[1:]:
        system.cleanup(failed)
    return finish_run(systems["this"], failed, [])


if __name__ == "__main__":
    sys.exit(main())
