"""The `import` job: validate an uploaded archive whole, then store its rows in the job's organization.

Nothing is written until the whole archive has been read and checked (pipelines/exports/archive.py),
and with `id_mode: keep` until no id of it belongs to another organization (`id_conflict`). Rows are
then inserted kind by kind, parents first, in batches that each commit; each insert skips rows that
are already there, and remapped ids are a function of the organization and the original id
(`uuid5`), so a redelivered job, or a second import of the same archive, stores nothing new.

Vectors are kept when the archive's embedding model and dimensions are this service's; otherwise
(or when the export left them out) the job embeds the imported memories itself, in batches, through
the same functions ingest uses.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from core.db import session_scope
from core.embedder import get_embedder, model_identity
from core.errors import PermanentJobError
from core.settings import get_settings
from pipelines.accounts import limits
from pipelines.exports import archive, storage
from pipelines.exports.kinds import BY_NAME, KINDS, Kind
from pipelines.jobs.runner import JobContext
from pipelines.memories import passages, store

# The namespace of remapped ids: uuid5(NAMESPACE, "<organization>:<original id>").
NAMESPACE = uuid.UUID("6b1f6c1e-3f0a-5c7e-9d5b-0e6a2f4c8a11")


class IdConflict(PermanentJobError):
    code = "id_conflict"


class _Ids:
    """Original id → id in the importing organization, and which ids of each kind the archive holds."""

    def __init__(self, org_id: uuid.UUID, keep: bool) -> None:
        self.org_id, self.keep = org_id, keep
        self.seen: dict[str, set[str]] = {}

    def map(self, value: str | None) -> str | None:
        if value is None or self.keep:
            return value
        return str(uuid.uuid5(NAMESPACE, f"{self.org_id}:{value}"))


def vectors_usable(manifest: dict[str, Any]) -> bool:
    """Whether the archive's vectors were computed by the model (name and version, and dimensions) this service
    embeds with."""
    settings, embedding = get_settings(), manifest.get("embedding") or {}
    return bool(manifest.get("vectors")) and embedding.get("model") == model_identity() \
        and embedding.get("dims") == settings.embedding_dim


# A reference column → the kind whose rows it names. A row naming a row the archive doesn't hold is skipped:
# it could only fail (no such row here) or, with ids kept, reach another organization's row.
PARENTS = {"memory_id": "memories", "block_id": "blocks", "agent_id": "agents", "conversation_id": "conversations"}


def _orphan(kind: Kind, doc: dict[str, Any], ids: _Ids) -> bool:
    return any(doc.get(c) not in ids.seen.get(PARENTS[c], ()) for c in kind.refs)


def _transform(kind: Kind, doc: dict[str, Any], ids: _Ids, keep_vectors: bool) -> dict[str, Any]:
    row = {c: doc.get(c) for c in kind.columns}
    row["org_id"] = str(ids.org_id)
    if kind.has_id:
        ids.seen.setdefault(kind.name, set()).add(row["id"])
        row["id"] = ids.map(row["id"])
    for column in kind.refs:
        row[column] = ids.map(row[column])
    for column in kind.ref_arrays:  # ids of rows not in the archive (an agent's other tools) are dropped
        row[column] = [ids.map(v) for v in row[column] or [] if v in ids.seen.get("tools", ())]
    for column in kind.cleared:
        row[column] = None
    if not keep_vectors:
        for column in kind.vectors:
            row[column] = None
    if kind.name == "agents":
        # MCP servers and LLM configs stay with the organization that has them: the importing one's default applies.
        row["mcp_server_ids"] = []
        row["llm"] = {k: v for k, v in (row.get("llm") or {}).items() if k != "config_id"}
    if kind.name == "memories" and row["agent_id"] in ids.seen.get("agents", ()):
        row["agent_id"] = ids.map(row["agent_id"])  # a memory of an exported agent follows the agent's new id
    return row


async def _check_conflicts(path: Path, kinds: list[Kind], org_id: uuid.UUID, batch: int) -> None:
    """With ids kept: fail before writing if any of the archive's ids is another organization's row."""
    for kind in (k for k in kinds if k.has_id):
        for rows in archive.read_rows(path, kind, batch):
            async with session_scope() as session:
                clash = (await session.execute(text(
                    f"SELECT id FROM {kind.table.__tablename__} WHERE id = ANY(CAST(:ids AS uuid[])) "
                    "AND org_id <> :org LIMIT 1"), {"ids": [r["id"] for r in rows], "org": org_id})).first()
            if clash is not None:
                raise IdConflict(f"{kind.name} id {clash[0]} belongs to another organization: import with "
                                 "id_mode remap", details={"kind": kind.name, "id": str(clash[0])})


async def _check_quota(path: Path, ids: _Ids, batch: int) -> None:
    """Fail before writing (`quota_max_memories`) if the memories this import would add don't fit the quota."""
    new = 0
    for rows in archive.read_rows(path, BY_NAME["memories"], batch):
        wanted = [ids.map(r["id"]) for r in rows]
        async with session_scope() as session:
            present = (await session.execute(text(
                "SELECT count(*) FROM memories WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": wanted})).scalar_one()
        new += len(wanted) - int(present)
    async with session_scope() as session:
        await limits.reserve_memories(session, ids.org_id, new)
        await session.commit()


async def _insert(kind: Kind, rows: list[dict[str, Any]], *, versions_follow: bool, actor: str | None,
                  job_id: uuid.UUID) -> int:
    """Insert a batch in one transaction, skipping rows already there; how many were new. Memories and their
    versions are written by the memories' store, as every memory write is."""
    async with session_scope() as session:
        if kind.name == "memories":
            count = await store.add_imported(session, rows, versions_follow=versions_follow, job_id=job_id,
                                             actor=actor)
        elif kind.name == "memory_history":
            count = await store.add_imported_versions(session, rows)
        else:
            table, columns = kind.table.__tablename__, ", ".join(kind.columns)
            count = (await session.execute(text(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, "
                f"CAST(:docs AS jsonb)) ON CONFLICT DO NOTHING"), {"docs": json.dumps(rows)})).rowcount
        await session.commit()
    return count


async def _embed_missing(ctx: JobContext, batch: int) -> int:
    """Embed the organization's live memories that have no vector (the imported ones), batch by batch."""
    embedded, after = 0, uuid.UUID(int=0)
    while True:
        async with session_scope() as session:
            rows = (await session.execute(text(
                "SELECT id, content, content_hash FROM memories WHERE org_id = :org AND deleted_at IS NULL "
                "AND embedding IS NULL AND id > :after ORDER BY id LIMIT :n"),
                {"org": ctx.job.org_id, "after": after, "n": batch})).all()
        if not rows:
            return embedded
        vectors = await passages.embed_contents(get_embedder().embed, [r.content for r in rows])
        async with session_scope() as session:
            for row, vector in zip(rows, vectors, strict=True):
                if await store.set_embedding(session, row.id, expected_hash=row.content_hash, embedding=vector.head):
                    await passages.replace_passages(session, row.id, passages.passage_rows(
                        row.id, ctx.job.org_id, row.content_hash, vector))
            await session.commit()
        embedded += len(rows)
        after = rows[-1].id
        await ctx.progress(ctx.job.progress_total, ctx.job.progress_total, f"embedded {embedded}")


async def import_archive(ctx: JobContext) -> dict[str, Any]:
    """Validate the job's archive, then store its rows (see the module's docstring)."""
    job, settings = ctx.job, get_settings()
    archive_id, keep = uuid.UUID(job.payload["archive_id"]), job.payload.get("id_mode") == "keep"
    batch = settings.export_batch_rows
    await ctx.progress(0, 1, "reading the archive")
    async with session_scope() as session:
        if await storage.is_expired(session, archive_id):
            raise PermanentJobError("the uploaded archive expired before it was imported", code="archive_expired")
    with tempfile.TemporaryDirectory(prefix="agentmem-import-") as folder:
        path = Path(folder) / "archive.tar.gz"
        await storage.spool(archive_id, path)
        manifest = await asyncio.to_thread(archive.validate, path)
        kinds = [k for k in KINDS if k.name in manifest["members"]]
        keep_vectors = vectors_usable(manifest)
        if not keep_vectors:
            kinds = [k for k in kinds if k.name != "memory_passages"]
        if keep:
            await _check_conflicts(path, kinds, job.org_id, batch)
        if "memories" in manifest["members"]:
            await _check_quota(path, _Ids(job.org_id, keep), batch)
        total = sum(manifest["members"][k.name]["count"] for k in kinds)
        job.progress_total = max(total, 1)
        await ctx.progress(0, job.progress_total, "validated")
        ids, done = _Ids(job.org_id, keep), 0
        inserted: dict[str, int] = {}
        skipped: dict[str, int] = {}
        versions_follow = "memory_history" in manifest["members"]
        for kind in kinds:
            inserted[kind.name] = 0
            for rows in archive.read_rows(path, kind, batch):
                docs = [_transform(kind, r, ids, keep_vectors) for r in rows if not _orphan(kind, r, ids)]
                skipped[kind.name] = skipped.get(kind.name, 0) + len(rows) - len(docs)
                inserted[kind.name] += await _insert(kind, docs, versions_follow=versions_follow, actor=job.actor,
                                                     job_id=job.id)
                done += len(rows)
                await ctx.progress(done, job.progress_total, kind.name)
    embedded = await _embed_missing(ctx, batch) if not keep_vectors and "memories" in manifest["members"] else 0
    async with session_scope() as session:
        await storage.drop(session, archive_id)  # its rows are stored: the upload has served
        await storage.purge_expired(session)
        await session.commit()
    counts = {k.name: manifest["members"][k.name]["count"] for k in kinds}
    return {"archive_id": str(archive_id), "id_mode": "keep" if keep else "remap",
            "source": manifest.get("source"), "vectors": "kept" if keep_vectors else "recomputed",
            "inserted": inserted, "orphans_skipped": {k: n for k, n in skipped.items() if n},
            "already_present": {k: counts[k] - inserted[k] - skipped.get(k, 0) for k in counts},
            "embedded": embedded}
