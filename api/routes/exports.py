"""Export a scope of your organization to a compressed archive and download it; import such an archive."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api.deps import Allow, IdempotencyKey, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.middleware.request_limits import upload_too_large
from api.routing import RAW_BODY, CheckedRoute
from core.errors import Conflict, Gone, InvalidInput, NotFound
from core.settings import get_settings
from pipelines.exports import storage
from pipelines.jobs import lifecycle
from pipelines.pages import newest_first
from schemas.common import ErrorOut, Page
from schemas.enums import JobKind, JobStatus
from schemas.exports import ExportIn, ExportOut
from schemas.jobs import JobError, JobOut, JobProgress
from schemas.permissions import Permission as P, Principal
from schemas.tables import Archive, Job

GZIP_MAGIC = b"\x1f\x8b"

router = APIRouter(route_class=CheckedRoute, tags=["exports"], responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.EXPORTS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.EXPORTS_WRITE))]
NOT_FOUND = {404: {"model": ErrorOut, "description": "`not_found`: no export of that id in your organization"}}
UPLOAD_BODY = {"requestBody": {"required": True, "description": "The archive, as `GET /api/v1/exports/{id}/download` "
                                                                "gave it (`.tar.gz`).",
                               "content": {RAW_BODY: {"schema": {"type": "string", "format": "binary"}}}}}
DOWNLOAD = {200: {"description": "The archive (`application/gzip`): a tar of `<kind>.jsonl` members and "
                                 "`manifest.json` last", "content": {"application/gzip": {
                                     "schema": {"type": "string", "format": "binary"}}}}}


async def _export(session, who: Principal, export_id: uuid.UUID) -> tuple[Job, Archive | None]:
    job = (await session.get(Job, export_id))
    if job is None or job.org_id != who.org_id or job.kind != JobKind.EXPORT.value:
        raise NotFound(f"export {export_id} not found", details={"export_id": str(export_id)})
    return job, await storage.get(session, who.org_id, export_id)


def _out(job: Job, archive: Archive | None, expired: bool) -> ExportOut:
    ready = archive is not None and archive.complete
    return ExportOut(
        id=job.id, status=job.status,
        progress=JobProgress(done=job.progress_done, total=job.progress_total, message=job.progress_message),
        error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
        scope=job.payload["scope"], scope_id=job.payload.get("scope_id"), include=job.payload["include"],
        vectors=job.payload.get("vectors", True), created_at=job.created_at, finished_at=job.finished_at,
        size_bytes=archive.size_bytes if ready else None, sha256=archive.sha256 if ready else None,
        manifest=archive.manifest if ready else None, expires_at=archive.expires_at if archive else None,
        expired=expired, download_url=f"/api/v1/exports/{job.id}/download" if ready and not expired else None)


@router.post("/api/v1/exports", status_code=status.HTTP_202_ACCEPTED, response_model=ExportOut,
             responses={409: {"model": ErrorOut, "description": "Idempotency-Key reused with another body"}})
@audited("export", target=lambda result: result.id,
         details=lambda body: {"scope": body.scope, "scope_id": body.scope_id, "include": body.include})
async def create_export(body: ExportIn, session: SessionDep, who: Writer, response: Response,
                        key: IdempotencyKey = None) -> ExportOut:
    """Export a scope to a compressed archive (admins and owners).

    Answers `202` with the export, whose id is also its `export` job's: follow it at
    `GET /api/v1/jobs/{id}/events` (a `progress` event per batch of rows). When it succeeded,
    `GET /api/v1/exports/{id}/download` gives the archive until `expires_at`
    (`AGENTMEM_EXPORT_RETENTION_HOURS`); after that `410 export_expired`.

    The archive is a `.tar.gz` of one JSON Lines file per kind of row and `manifest.json` (format
    version, source organization and scope, the count and sha256 of each member, the embedding
    model and its dimensions). `POST /api/v1/imports` reads it.
    """
    payload = body.model_dump(mode="json")
    job, _ = await lifecycle.submit(session, who, kind=JobKind.EXPORT, payload=payload, total=1, key=key)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/exports/{job.id}"
    return _out(job, None, False)


@router.get("/api/v1/exports", response_model=Page[ExportOut])
async def list_exports(session: SessionDep, who: Reader, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[ExportOut]:
    """Your organization's exports, newest first, with their state, and expiry once written."""
    query = select(Job).where(Job.org_id == who.org_id, Job.kind == JobKind.EXPORT.value)
    rows, next_cursor = await newest_first(session, query, Job, limit=limit, cursor=cursor)
    archives = {a.id: a for a in await storage.get_many(session, who.org_id, [j.id for j in rows])}
    expired = await storage.expired_ids(session, list(archives))
    return Page[ExportOut](items=[_out(j, archives.get(j.id), j.id in expired) for j in rows],
                           next_cursor=next_cursor)


@router.get("/api/v1/exports/{export_id}", response_model=ExportOut, responses=NOT_FOUND)
async def get_export(export_id: uuid.UUID, session: SessionDep, who: Reader) -> ExportOut:
    """An export's state: its job's progress, then its archive's size, checksum, manifest and expiry."""
    job, archive = await _export(session, who, export_id)
    expired = archive is not None and await storage.is_expired(session, archive.id)
    return _out(job, archive, expired)


@router.get("/api/v1/exports/{export_id}/download", response_class=StreamingResponse, responses={
    **DOWNLOAD, **NOT_FOUND,
    409: {"model": ErrorOut, "description": "`export_not_ready`: the job has not succeeded (yet)"},
    410: {"model": ErrorOut, "description": "`export_expired`: past its retention, the archive is gone"}})
async def download_export(export_id: uuid.UUID, session: SessionDep, who: Reader) -> StreamingResponse:
    """Download an export's archive, streamed, as an attachment (`agentmem-export-<id>.tar.gz`)."""
    job, archive = await _export(session, who, export_id)
    if job.status != JobStatus.SUCCEEDED.value or archive is None or not archive.complete:
        raise Conflict(f"export {export_id} is {job.status}; download it once it has succeeded",
                       code="export_not_ready", details={"status": job.status})
    if await storage.is_expired(session, archive.id):
        raise Gone(f"export {export_id} expired at {archive.expires_at.isoformat()}", code="export_expired",
                   details={"expires_at": archive.expires_at.isoformat()})
    headers = {"Content-Length": str(archive.size_bytes), "X-Content-Type-Options": "nosniff",
               "Content-Disposition": f'attachment; filename="agentmem-export-{archive.id}.tar.gz"',
               "Digest": f"sha-256={archive.sha256}"}
    return StreamingResponse(storage.chunks(archive.id), media_type="application/gzip", headers=headers)


@router.post("/api/v1/imports", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             openapi_extra=UPLOAD_BODY, responses={
                 413: {"model": ErrorOut, "description": "`payload_too_large`: over `AGENTMEM_IMPORT_MAX_BYTES`"},
                 422: {"model": ErrorOut, "description": "`archive_empty`: no bytes were sent; "
                                                         "`archive_not_gzip`: the bytes are not a .tar.gz"}})
@audited("job", target=lambda result: result.id, details=lambda id_mode: {"id_mode": id_mode})
async def create_import(request: Request, session: SessionDep, who: Writer, response: Response,
                        id_mode: Annotated[Literal["remap", "keep"], Query(description=(
                            "`remap` (default): new ids, each derived from the original and your organization, "
                            "so importing the same archive again changes nothing; `keep`: the archive's ids, "
                            "refused (`id_conflict`) where one is another organization's."))] = "remap") -> JobOut:
    """Import an export's archive into your organization (admins and owners): the body is the `.tar.gz`.

    The upload is streamed into storage and refused (`413`) as soon as it passes the limit. Answers
    `202` with an `import` job. The job reads and checks the whole archive before it stores anything:
    a truncated or altered archive fails it with `archive_corrupt` or `archive_checksum_mismatch`
    (or `archive_format_unsupported`) and nothing is stored. Then it stores the rows in batches,
    skipping rows already there: a second import of the same archive stores nothing. Vectors are
    kept when the archive's embedding model is this service's; otherwise the memories are embedded
    again. The job's `result` counts the rows inserted and already present per kind.
    """
    limit, size, seq, digest = get_settings().import_max_bytes, 0, 0, hashlib.sha256()
    archive = await storage.create(session, who.org_id, "import")
    buffer = bytearray()
    async for block in request.stream():
        size += len(block)
        if size > limit:
            raise upload_too_large(limit)
        digest.update(block)
        buffer += block
        if seq == 0 and len(buffer) >= 2 and buffer[:2] != GZIP_MAGIC:
            # Not an archive at all: say so now, rather than store it and fail the job (nothing is committed).
            raise InvalidInput("the body is not a gzip-compressed archive (a .tar.gz from an export)",
                               code="archive_not_gzip")
        if len(buffer) >= storage.CHUNK_BYTES:
            await storage.append(session, archive.id, seq, bytes(buffer))
            seq, buffer = seq + 1, bytearray()
    if size == 0:
        raise InvalidInput("send the archive as the request body", code="archive_empty")
    if buffer:
        await storage.append(session, archive.id, seq, bytes(buffer))
    job, _ = await lifecycle.submit(session, who, kind=JobKind.IMPORT, payload={
        "archive_id": str(archive.id), "id_mode": id_mode, "size_bytes": size}, total=1, key=None)
    await storage.seal(session, archive.id, size=size, sha256=digest.hexdigest(), job_id=job.id)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.from_row(job)
