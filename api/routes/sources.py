"""Sources: documents uploaded whole (text, Markdown, HTML, PDF, DOCX) and kept as searchable memories."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile, status

from api.deps import Allow, SessionDep
from api.errors import error_responses
from api.middleware.audit import audited
from api.middleware.request_limits import upload_too_large
from api.routing import CheckedRoute
from core.errors import InvalidInput
from core.settings import get_settings
from pipelines.jobs import lifecycle
from pipelines.sources import store as sources
from pipelines.sources.sniff import ACCEPTED
from schemas.common import ErrorOut, Page
from schemas.inputs import METADATA_HELP, InputRejected
from schemas.permissions import Permission as P, Principal
from schemas.sources import (
    MAX_CHUNK_CHARS,
    MIN_CHUNK_CHARS,
    SourceOut,
    check_chunking,
    clean_filename,
    parse_metadata,
)

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/sources", tags=["sources"],
                   responses=error_responses(401, 403, 422, 429, 503))
ScopeForm = Annotated[str | None, Form(min_length=1, max_length=255)]
ScopeQuery = Annotated[str | None, Query(min_length=1, max_length=255)]
Reader = Annotated[Principal, Depends(Allow(P.MEMORIES_READ))]
Writer = Annotated[Principal, Depends(Allow(P.MEMORIES_WRITE))]
Deleter = Annotated[Principal, Depends(Allow(P.MEMORIES_DELETE))]
READ_BLOCK = 1 << 20


async def _read_bounded(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, read in blocks and refused (413) as soon as they pass `limit`."""
    parts, size = [], 0
    while block := await file.read(READ_BLOCK):
        size += len(block)
        if size > limit:
            raise upload_too_large(limit)
        parts.append(block)
    return b"".join(parts)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=SourceOut,
             responses={200: {"model": SourceOut, "description": "The same bytes were already uploaded to this scope: "
                                                                  "the existing source, and no new job"},
                        413: {"model": ErrorOut, "description": "`payload_too_large`: the file is larger than "
                                                                "`AGENTMEM_SOURCE_MAX_BYTES`"},
                        415: {"model": ErrorOut, "description": "`unsupported_media_type`: not text, Markdown, HTML, "
                                                                "PDF or DOCX (`details.accepted`)"}})
@audited("source", target=lambda result: result.id,
         details=lambda result: {"filename": result.filename, "media_type": result.media_type,
                                 "job_id": str(result.job_id)})
async def upload_source(
        session: SessionDep, who: Writer, response: Response,
        file: Annotated[UploadFile, File(description="The document: plain text, Markdown, HTML, PDF or DOCX.")],
        user_id: ScopeForm = None, agent_id: ScopeForm = None, run_id: ScopeForm = None,
        metadata: Annotated[str | None, Form(max_length=65_536, description=f"A JSON object copied into every "
                                                                              f"memory of the document. "
                                                                              f"{METADATA_HELP}")] = None,
        chunk_size: Annotated[int | None, Form(ge=MIN_CHUNK_CHARS, le=MAX_CHUNK_CHARS, description=(
            "Most characters of a chunk (default `AGENTMEM_SOURCE_CHUNK_CHARS`)."))] = None,
        chunk_overlap: Annotated[int | None, Form(ge=0, le=MAX_CHUNK_CHARS // 2, description=(
            "Characters of whole sentences a chunk repeats from the one before it, at most half of "
            "`chunk_size` (default `AGENTMEM_SOURCE_CHUNK_OVERLAP_CHARS`)."))] = None) -> SourceOut:
    """Upload a document (multipart field `file`) to remember: its text is split into chunks stored as memories.

    The type is told from the bytes, not from the client's Content-Type: plain text, Markdown, HTML,
    PDF or DOCX (else `415 unsupported_media_type`). At most `AGENTMEM_SOURCE_MAX_BYTES` (else
    `413 payload_too_large`, refused while reading).

    Answers `202` with the new source and its `ingest_source` job (`job_id`; follow it at
    `/api/v1/jobs/{id}/events`): the job extracts the text (PDF pages, Word and HTML and Markdown
    headings), splits it into chunks that never cross a heading and end between sentences, and
    stores each as a memory in the given scope, its metadata naming `source_id`, `filename`, `page`
    (PDF), `char_start`/`char_end` in the extracted text, `headings` and `chunk`. A document that
    can't be read fails the job with `source_unreadable`, one without text with `source_empty`;
    either way nothing is stored.

    Identical bytes uploaded again to the same scope answer `200` with the existing source and
    start no job (its first upload's chunking applies: delete it to chunk it again); one that
    failed or was cancelled is replaced by a new upload.
    """
    settings = get_settings()
    try:
        size = chunk_size or settings.source_chunk_chars
        overlap = chunk_overlap if chunk_overlap is not None else min(settings.source_chunk_overlap_chars, size // 2)
        check_chunking(size, overlap)
        meta = parse_metadata(metadata)
    except InputRejected as exc:
        raise InvalidInput(f"the request is invalid: {'.'.join(map(str, exc.loc))}: {exc.message}",
                           details=[exc.detail()]) from None
    data = await _read_bounded(file, settings.source_max_bytes)
    upload = sources.Upload(data=data, filename=clean_filename(file.filename), user_id=user_id, agent_id=agent_id,
                            run_id=run_id, metadata=meta, chunk_size=size, chunk_overlap=overlap)
    view, created = await sources.add_source(session, who, upload)
    await lifecycle.commit(session)
    response.headers["Location"] = f"/api/v1/sources/{view.row.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return SourceOut.from_view(view)


@router.get("", response_model=Page[SourceOut])
async def list_sources(session: SessionDep, who: Reader, user_id: ScopeQuery = None, agent_id: ScopeQuery = None,
                       run_id: ScopeQuery = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                       cursor: Annotated[str | None, Query(max_length=500)] = None) -> Page[SourceOut]:
    """List uploaded documents newest first, optionally within a user, agent or run scope."""
    views, next_cursor = await sources.list_sources(session, who.org_id, user_id=user_id, agent_id=agent_id,
                                                    run_id=run_id, limit=limit, cursor=cursor)
    return Page[SourceOut](items=[SourceOut.from_view(v) for v in views], next_cursor=next_cursor)


@router.get("/{source_id}", response_model=SourceOut, responses={404: {"model": ErrorOut}})
async def get_source(source_id: uuid.UUID, session: SessionDep, who: Reader) -> SourceOut:
    """Read one document's record: type, size, status, chunks, live memories, its job, and why it failed."""
    return SourceOut.from_view(await sources.get_source(session, who.org_id, source_id))


@router.get("/{source_id}/content", response_class=Response, responses={
    200: {"content": {t: {} for t in ACCEPTED}, "description": "The bytes as uploaded."},
    404: {"model": ErrorOut}})
async def download_source(source_id: uuid.UUID, session: SessionDep, who: Reader) -> Response:
    """Download the document as it was uploaded, with its sniffed type and file name."""
    row, content = await sources.get_content(session, who.org_id, source_id)
    disposition = f"attachment; filename*=UTF-8''{quote(row.filename, safe='')}"
    return Response(content=content, media_type=row.media_type, headers={"Content-Disposition": disposition})


@router.delete("/{source_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}})
@audited()
async def delete_source(source_id: uuid.UUID, session: SessionDep, who: Deleter) -> Response:
    """Delete a document and every memory made from it (soft: they leave reads and search at once, their
    history stays readable). A job still ingesting it is cancelled and stores nothing."""
    _, cancelled = await sources.delete_source(session, who.org_id, source_id, actor=who.actor)
    if cancelled is not None:
        await lifecycle.conclude(session, cancelled)
    else:
        await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
