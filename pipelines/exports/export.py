"""The `export` job: read a scope's rows kind by kind in keyset batches into an archive, stored for download.

Rows are read as `to_jsonb` of the table's row (only the table's own columns are kept, never the
organization id), so an archive holds what the database holds, vectors as pgvector's text form.
Progress is reported per batch. The archive is written to a temporary folder on the worker, then
copied into the database in one transaction: a redelivered job starts again and replaces it whole.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from core.db import session_scope
from core.embedder import model_identity
from core.settings import get_settings
from pipelines.exports import storage
from pipelines.exports.archive import ArchiveWriter
from pipelines.exports.kinds import Kind, selected
from pipelines.jobs.runner import JobContext


def scope_params(org_id: uuid.UUID, scope: str, scope_id: str | None) -> dict[str, Any]:
    """The SQL parameters of a scope's conditions (pipelines/exports/kinds.py)."""
    agent = None
    if scope == "agent" and scope_id:
        try:
            agent = uuid.UUID(scope_id)
        except ValueError:
            agent = None  # memories may name an agent that is no agent row: then only they are exported
    return {"org": org_id, "value": scope_id, "agent": agent}


def _page(kind: Kind, scope: str, after: tuple | None) -> str:
    keys = ", ".join(f"t.{k}" for k in kind.key)
    cols = ", ".join(f"t.{k} AS k{i}" for i, k in enumerate(kind.key))
    after_sql = ""
    if after is not None:
        after_sql = f" AND ({keys}) > ({', '.join(f':k{i}' for i in range(len(kind.key)))})"
    return (f"SELECT to_jsonb(t) AS doc, {cols} FROM {kind.table.__tablename__} t "
            f"WHERE {kind.where[scope]}{after_sql} ORDER BY {keys} LIMIT :limit")


def _clean(kind: Kind, doc: dict[str, Any], vectors: bool) -> dict[str, Any]:
    row = {c: doc.get(c) for c in kind.columns if c != "org_id"}
    if not vectors:
        for column in kind.vectors:
            row[column] = None
    return row


async def count_rows(org_id: uuid.UUID, kinds: list[Kind], scope: str, scope_id: str | None) -> dict[str, int]:
    """How many rows of each kind the scope holds now."""
    params = scope_params(org_id, scope, scope_id)
    async with session_scope() as session:
        return {k.name: int((await session.execute(text(
            f"SELECT count(*) FROM {k.table.__tablename__} t WHERE {k.where[scope]}"), params)).scalar_one())
            for k in kinds}


async def export(ctx: JobContext) -> dict[str, Any]:
    """Write the job's scope to an archive (id = the job's id) and store it until it expires."""
    job, settings = ctx.job, get_settings()
    scope, scope_id = job.payload["scope"], job.payload.get("scope_id")
    vectors = bool(job.payload.get("vectors", True))
    kinds = selected(job.payload["include"], vectors=vectors)
    total = sum((await count_rows(job.org_id, kinds, scope, scope_id)).values())
    done = 0
    await ctx.progress(done, total, "counted")
    params = scope_params(job.org_id, scope, scope_id) | {"limit": settings.export_batch_rows}
    with tempfile.TemporaryDirectory(prefix="agentmem-export-") as folder:
        writer = ArchiveWriter(Path(folder))
        for kind in kinds:
            writer.open(kind)
            after: tuple | None = None
            while True:
                async with session_scope() as session:
                    page = (await session.execute(text(_page(kind, scope, after)), params | {
                        f"k{i}": v for i, v in enumerate(after or ())})).all()
                if not page:
                    break
                await asyncio.to_thread(writer.write, kind, [_clean(kind, r.doc, vectors) for r in page])
                after = tuple(page[-1][1:])
                done += len(page)
                await ctx.progress(done, max(total, done), kind.name)
        manifest = {"created_at": None, "source": {"org_id": str(job.org_id), "scope": scope, "scope_id": scope_id,
                                                   "job_id": str(job.id)},
                    "include": job.payload["include"], "vectors": vectors,
                    "embedding": {"model": model_identity(), "dims": settings.embedding_dim}}
        async with session_scope() as session:
            manifest["created_at"] = (await session.execute(text("SELECT now()"))).scalar_one().isoformat()
        path, manifest = await asyncio.to_thread(writer.finish, manifest)
        archive = await storage.store_file(job.org_id, job.id, path, job_id=job.id, manifest=manifest)
    async with session_scope() as session:
        await storage.purge_expired(session)
        await session.commit()
    return {"archive_id": str(archive.id), "size_bytes": archive.size_bytes, "sha256": archive.sha256,
            "counts": {name: m["count"] for name, m in manifest["members"].items()},
            "expires_at": archive.expires_at.isoformat(), "download": f"/api/v1/exports/{job.id}/download"}
