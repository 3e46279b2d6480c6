"""How long the steps of a switch of embedding dimension hold the tables (core/embedding_columns.py).

    python bench/embedding_switch.py [--rows 50000]

On an embedded PostgreSQL of its own: tables shaped like `memories`, `memory_passages` and `messages`, the
first with `--rows` rows of 384-d vectors (no HNSW index on them: building one is not what is measured).
Printed, each step's wall time: `begin` to 768 (the vectors moved aside, the new column's index built
CONCURRENTLY while empty), an undo (back to 384: the old column had no index here, so it is built, on
every row: the worst case of a crash-rebuild), `begin` again, then, every row given a 768-d vector,
`finish` (the old columns dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from core import embedding_columns
from core.db import dispose_engine, session_scope, set_database_url
from core.servers import EmbeddedPostgres
from core.settings import get_settings


async def _tables(rows: int) -> None:
    async with session_scope() as session:
        await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        for table in embedding_columns.TABLES:
            extra = {"memories": ", expires_at timestamptz, embedded_hash text",
                     "messages": ", role text DEFAULT 'user', content text DEFAULT 'x'"}.get(table, "")
            required = " NOT NULL" if table == "memory_passages" else ""
            await session.execute(text(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, deleted_at timestamptz"
                                       f"{extra}, embedding vector(384){required}, embedding_model varchar(200))"))
        await session.execute(text("INSERT INTO memories (embedding, embedding_model) SELECT (SELECT array_agg("
                                   "random())::real[]::vector FROM generate_series(1, 384) WHERE g > 0), 'old' "
                                   "FROM generate_series(1, :n) g"), {"n": rows})
        await session.commit()


async def _timed(label: str, step) -> None:
    start = time.perf_counter()
    await step
    print(f"{label}: {time.perf_counter() - start:.2f} s")


async def main(rows: int) -> None:
    await _tables(rows)
    await _timed("begin (moved aside, index built on the empty column)", embedding_columns.begin(768))
    await _timed("undo (moved back, the old column's index built on every row)", embedding_columns.begin(384))
    await _timed("begin again", embedding_columns.begin(768))
    async with session_scope() as session:
        await session.execute(text("UPDATE memories SET embedding = array_fill(0.1, ARRAY[768])::real[]::vector, "
                                   "embedding_model = 'new'"))
        await session.commit()
    await _timed("finish (old columns dropped)", embedding_columns.finish())
    await dispose_engine()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    get_settings().db_command_timeout_seconds = 3600.0  # filling the new column here is one long UPDATE
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="agentmem-bench-switch-", dir="/tmp")))
    set_database_url(server.start())
    try:
        asyncio.run(main(args.rows))
    finally:
        server.stop()
