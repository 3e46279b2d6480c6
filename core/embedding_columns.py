"""The embedding columns and their dimension: which `vector(N)` holds the current model's vectors, and a switch
to a model of another dimension done online.

`memories`, `memory_passages` and `messages` each keep their vectors in `embedding vector(N)` (HNSW-indexed,
`ix_<table>_embedding`) beside `embedding_model`. A switch to M dimensions (`AGENTMEM_EMBEDDING_DIM` no longer
the column's) is three steps, each idempotent, so a crash anywhere is resumed by running it again:

1. `begin`: in one short transaction per table, the vectors move aside (`embedding` → `embedding_prev`,
   `embedding_model` → `embedding_model_prev`, the index → `ix_<table>_embedding_prev`) and an empty
   `embedding vector(M)` with its `embedding_model` takes their place; then its HNSW index is built
   CONCURRENTLY (on an empty column: a scan, no lock held), and filled as vectors are written. Renames and
   a nullable column without a default touch no row. From then on every writer writes the new model's
   vectors where it always did, with no switch-awareness of its own.
2. `reembed` fills `embedding` organization by organization, as for any change of model. Meanwhile search
   compares a query embedded by the new model with `embedding`, and (AGENTMEM_EMBEDDING_PREVIOUS_MODEL)
   one embedded by the old model with `embedding_prev`: every memory is found by meaning throughout.
3. `finish`, once no live row anywhere still waits for its new vector: the `_prev` columns and their
   index are dropped (passages whose memory went meanwhile go with them, and `memory_passages.embedding`
   becomes NOT NULL again).

The state is the catalog itself: a switch is under way exactly while `embedding_prev` exists. A search reads
it in its own transaction, from a statement that takes the table's share lock, so `finish` (which needs the
exclusive lock) cannot drop a column between the check and the query that uses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import autocommit_scope, session_scope
from core.errors import PermanentJobError, TransientJobError

TABLES = ("memories", "memory_passages", "messages")
ADVISORY_KEY = "embedding_columns"  # builds of the embedding columns' indexes, one at a time
LOCK_TIMEOUT = "5s"  # DDL waits this long for the table's lock, then the step fails and is retried
LOCK_NOT_AVAILABLE = "55P03"
INDEX_BUILD_TIMEOUT = 24 * 3600.0  # seconds; a build on an empty column takes one scan of the table


@dataclass(frozen=True)
class ColumnState:
    """One table's vector columns: the live `embedding`'s dimension, and `embedding_prev`'s during a switch."""

    dim: int
    prev_dim: int | None = None

    @property
    def switching(self) -> bool:
        return self.prev_dim is not None


def _dims_sql(table: str, lock: bool) -> str:
    # Referencing the table (a query that returns nothing) takes its ACCESS SHARE lock for the transaction.
    locking = f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE false)" if lock else ""
    return (f"SELECT (SELECT atttypmod FROM pg_attribute WHERE attrelid = '{table}'::regclass "
            f"AND attname = 'embedding' AND NOT attisdropped) AS dim, "
            f"(SELECT atttypmod FROM pg_attribute WHERE attrelid = '{table}'::regclass "
            f"AND attname = 'embedding_prev' AND NOT attisdropped) AS prev_dim{locking}")


async def column_state(session: AsyncSession, table: str = "memories", *, lock: bool = True) -> ColumnState:
    """`table`'s vector columns as the database has them now; with `lock`, held so for the session's transaction."""
    if table not in TABLES:
        raise ValueError(table)
    row = (await session.execute(text(_dims_sql(table, lock)))).one()
    return ColumnState(int(row.dim), None if row.prev_dim is None else int(row.prev_dim))


async def states() -> dict[str, ColumnState]:
    """Each table's vector columns."""
    async with session_scope() as session:
        return {t: await column_state(session, t, lock=False) for t in TABLES}


async def begin(dim: int) -> bool:
    """Start (or resume) a switch to `dim` dimensions; whether one is under way afterwards.

    `dim` the dimension an unfinished switch came from: the switch is undone (the old vectors back in
    `embedding`; those written meanwhile are lost, `reembed` makes them again). Refuses
    (`embedding_dim_change`) while a switch to yet another dimension is unfinished."""
    current = await states()
    for table, state in current.items():
        if state.switching and dim not in (state.dim, state.prev_dim):
            raise PermanentJobError(f"{table}.embedding is being switched from {state.prev_dim} to {state.dim} "
                                    f"dimensions and AGENTMEM_EMBEDDING_DIM is {dim}: finish or undo that switch first "
                                    "(README \"Switching embedding models\")", code="embedding_dim_change")
    switching = False
    for table, state in current.items():
        if state.switching and state.prev_dim == dim:
            await _move_back(table, dim)
            state = ColumnState(dim)
        if not state.switching and state.dim != dim:
            await _move_aside(table, dim)
            state = ColumnState(dim, state.dim)
        if state.switching:
            await _ensure_index(table, f"ix_{table}_embedding", "embedding")
            switching = True
    return switching


@asynccontextmanager
async def _locked(table: str) -> AsyncIterator[AsyncSession]:
    """A transaction holding `table` exclusively; a table busy past LOCK_TIMEOUT is a transient failure (the job
    retries) rather than a queue of every reader behind the DDL."""
    try:
        async with session_scope() as session:
            await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await session.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            yield session
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise TransientJobError(f"{table} stayed busy for {LOCK_TIMEOUT}: the switch of its embedding column "
                                "goes on at the next attempt", code="embedding_switch_busy") from exc


async def _move_aside(table: str, dim: int) -> None:
    async with _locked(table) as session:
        state = await column_state(session, table, lock=False)
        if state.switching or state.dim == dim:  # another process got there first
            return
        for statement in (
                f"ALTER TABLE {table} RENAME COLUMN embedding TO embedding_prev",
                f"ALTER TABLE {table} RENAME COLUMN embedding_model TO embedding_model_prev",
                f"ALTER TABLE {table} ALTER COLUMN embedding_prev DROP NOT NULL",
                f"ALTER INDEX IF EXISTS ix_{table}_embedding RENAME TO ix_{table}_embedding_prev",
                f"ALTER TABLE {table} ADD COLUMN embedding vector({int(dim)}), "
                "ADD COLUMN embedding_model varchar(200)",
                # In the row, as the column it replaces (migration 0017).
                f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN"):
            await session.execute(text(statement))
        await session.commit()


async def _move_back(table: str, dim: int) -> None:
    """Undo a switch: the new column and its index dropped, the old vectors back under their names."""
    async with _locked(table) as session:
        state = await column_state(session, table, lock=False)
        if state.prev_dim != dim:  # another process got there first
            return
        statements = [f"ALTER TABLE {table} DROP COLUMN embedding, DROP COLUMN embedding_model",
                      f"ALTER TABLE {table} RENAME COLUMN embedding_prev TO embedding",
                      f"ALTER TABLE {table} RENAME COLUMN embedding_model_prev TO embedding_model",
                      f"ALTER INDEX IF EXISTS ix_{table}_embedding_prev RENAME TO ix_{table}_embedding"]
        if table == "memories":  # moved meanwhile, perhaps as a new content whose old vector is stale: again
            statements.insert(0, "UPDATE memories SET embedded_hash = NULL WHERE embedding IS NOT NULL")
        if table == "memory_passages":  # passages written during the switch have no old vector
            statements += ["DELETE FROM memory_passages WHERE embedding IS NULL",
                           "ALTER TABLE memory_passages ALTER COLUMN embedding SET NOT NULL"]
        for statement in statements:
            await session.execute(text(statement))
        await session.commit()
    await _ensure_index(table, f"ix_{table}_embedding", "embedding")


async def _ensure_index(table: str, name: str, column: str) -> None:
    """The column's HNSW index, built without blocking writes; a half-built one (a crash) is rebuilt.

    One process at a time (a session advisory lock, gone with a dead connection): another run beginning the
    same switch waits for the build rather than take an index being built for a crashed one. On the driver's
    connection, as VACUUM is: no transaction block, and no command timeout cutting a long build short."""
    async with autocommit_scope() as session:
        raw = (await (await session.connection()).get_raw_connection()).driver_connection
        await raw.execute(f"SELECT pg_advisory_lock(hashtextextended('{ADVISORY_KEY}', 0))")
        try:
            valid = await raw.fetchval("SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                                       "WHERE c.relname = $1", name)
            if valid:
                return
            if valid is not None:
                await raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", timeout=INDEX_BUILD_TIMEOUT)
            await raw.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
                              f"USING hnsw ({column} vector_cosine_ops)", timeout=INDEX_BUILD_TIMEOUT)
        finally:
            await raw.execute(f"SELECT pg_advisory_unlock(hashtextextended('{ADVISORY_KEY}', 0))")


# Live rows that had a vector before the switch and have none in the new column yet, in any organization.
_UNMOVED = {
    "memories": "SELECT count(*) FROM memories WHERE deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
                "AND embedding IS NULL AND embedding_prev IS NOT NULL",
    "messages": "SELECT count(*) FROM messages WHERE deleted_at IS NULL AND role IN ('user', 'assistant') "
                "AND content <> '' AND embedding IS NULL AND embedding_prev IS NOT NULL",
}


async def unmoved() -> int:
    """How many live memories and messages, in every organization, still wait for a vector of the new dimension."""
    total = 0
    async with session_scope() as session:
        for table, sql in _UNMOVED.items():
            if (await column_state(session, table, lock=False)).switching:
                total += int((await session.execute(text(sql))).scalar_one())
    return total


async def finish() -> bool:
    """Drop the old vectors once nothing waits for a new one; whether the switch is over (or none was under way)."""
    if await unmoved():
        return False
    for table in TABLES:
        async with _locked(table) as session:
            if not (await column_state(session, table, lock=False)).switching:
                continue
            if table in _UNMOVED and int((await session.execute(text(_UNMOVED[table]))).scalar_one()):
                return False  # one left meanwhile (a row restored, or its new vector refused): the next run moves it
            if table == "memory_passages":
                # Passages not replaced by now belong to memories deleted, expired or edited meanwhile.
                await session.execute(text("DELETE FROM memory_passages WHERE embedding IS NULL"))
                await session.execute(text("ALTER TABLE memory_passages ALTER COLUMN embedding SET NOT NULL"))
            await session.execute(text(f"ALTER TABLE {table} DROP COLUMN embedding_prev, "
                                       "DROP COLUMN embedding_model_prev"))
            await session.commit()
    return True
