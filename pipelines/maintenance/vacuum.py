"""`vacuum`: ANALYZE the big tables (and VACUUM those with many dead rows), then report index health.

A platform task: it works on the whole database, so it runs from a platform-wide schedule or a
superuser's run-now. VACUUM can't run inside a transaction, so each statement goes alone on an
autocommit connection (the driver's simple protocol); neither VACUUM (without FULL) nor ANALYZE blocks
reads or writes. One table per step: cancelling stops between tables.

The index report lists each index of those tables with its size and scans since statistics were reset,
flags invalid indexes (a failed CREATE INDEX CONCURRENTLY leaves one), unused ones (never scanned, not
backing a constraint), and estimates a B-tree's bloat from its row count and the columns' average width
(a rough figure: `pgstattuple` gives exact ones).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from core.db import autocommit_scope, session_scope
from pipelines.jobs.runner import JobContext
from pipelines.maintenance.base import PLATFORM, MaintenanceTask

TABLES = ("memories", "memory_passages", "memory_history", "jobs", "audit_logs", "messages", "conversations",
          "blocks", "block_versions", "sources", "source_blobs", "schedules")

TABLE_STATS = text("""
    SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables
    WHERE relname = :table AND schemaname = current_schema()""")

INDEX_REPORT = text("""
    SELECT s.relname AS table_name, s.indexrelname AS index_name, pg_relation_size(s.indexrelid) AS size_bytes,
           s.idx_scan, NOT i.indisvalid AS invalid, i.indisunique OR i.indisprimary AS backs_constraint,
           c.reltuples, am.amname,
           (SELECT sum(coalesce(st.avg_width, 8)) FROM pg_attribute a
            LEFT JOIN pg_stats st ON st.schemaname = current_schema() AND st.tablename = s.relname
                 AND st.attname = a.attname
            WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) AS key_width,
           current_setting('block_size')::int AS block_size
    FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
    JOIN pg_class c ON c.oid = s.indexrelid JOIN pg_am am ON am.oid = c.relam
    WHERE s.relname = ANY(CAST(:tables AS text[])) AND s.schemaname = current_schema()
    ORDER BY pg_relation_size(s.indexrelid) DESC""")


class VacuumParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vacuum: bool = Field(default=True, description="VACUUM tables with many dead rows (else ANALYZE only).")
    dead_fraction: float = Field(default=0.1, ge=0, le=1, description="VACUUM a table whose dead rows exceed this "
                                                                       "share of its live ones (and 1000).")


def bloat_estimate(size_bytes: int, reltuples: float, key_width: float | None, block_size: int) -> float | None:
    """A B-tree's share of space beyond what its rows need at the default 90% fill; None without statistics."""
    if not key_width or reltuples <= 0 or size_bytes <= block_size:
        return None
    # Per entry: the key, an 8-byte tuple header and a 4-byte line pointer, 8-byte aligned; plus the metapage.
    entry = ((key_width + 8 + 7) // 8) * 8 + 4
    expected = reltuples * entry / 0.9 + block_size
    return round(max(0.0, 1 - expected / size_bytes), 3)


async def _run(statement: str) -> None:
    async with autocommit_scope() as session:
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.execute(statement)  # simple protocol: no implicit transaction block


async def _index_report() -> list[dict[str, Any]]:
    async with session_scope() as session:
        rows = (await session.execute(INDEX_REPORT, {"tables": list(TABLES)})).mappings().all()
    report = []
    for row in rows:
        bloat = (bloat_estimate(row["size_bytes"], row["reltuples"], row["key_width"], row["block_size"])
                 if row["amname"] == "btree" else None)
        report.append({"table": row["table_name"], "index": row["index_name"], "size_bytes": row["size_bytes"],
                       "scans": row["idx_scan"], "invalid": row["invalid"],
                       "unused": row["idx_scan"] == 0 and not row["backs_constraint"], "bloat_estimate": bloat})
    return report


async def vacuum(ctx: JobContext, params: VacuumParams) -> dict[str, Any]:
    """ANALYZE (or VACUUM ANALYZE) each big table in turn, then report on their indexes."""
    tables: list[dict[str, Any]] = []
    for done, table in enumerate(TABLES):
        await ctx.progress(done, len(TABLES) + 1, table)
        async with session_scope() as session:
            stats = (await session.execute(TABLE_STATS, {"table": table})).first()
        if stats is None:
            continue
        _, live, dead, size = stats
        action = "vacuum" if params.vacuum and dead > max(1000, params.dead_fraction * live) else "analyze"
        await _run(f"VACUUM (ANALYZE) {table}" if action == "vacuum" else f"ANALYZE {table}")
        tables.append({"table": table, "action": action, "live_rows": live, "dead_rows": dead, "size_bytes": size})
    await ctx.progress(len(TABLES), len(TABLES) + 1, "index report")
    indexes = await _index_report()
    await ctx.progress(len(TABLES) + 1, len(TABLES) + 1, "done")
    return {"tables": tables, "indexes": indexes,
            "invalid_indexes": [i["index"] for i in indexes if i["invalid"]],
            "unused_indexes": [i["index"] for i in indexes if i["unused"]]}


TASK = MaintenanceTask("vacuum", "ANALYZE the big tables (VACUUM those with many dead rows) and report index sizes, "
                       "estimated bloat, invalid and unused indexes. Platform-wide: superusers.", vacuum, VacuumParams,
                       PLATFORM)
