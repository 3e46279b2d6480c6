"""Files of your organization's workspace, the folder the built-in file tools read and write."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from api.deps import Allow
from api.errors import error_responses
from api.middleware.audit import audited
from api.routing import RAW_BODY, CheckedRoute
from pipelines.tools import files
from schemas.common import ErrorOut, Page
from schemas.files import FileOut
from schemas.permissions import Permission as P, Principal

router = APIRouter(route_class=CheckedRoute, prefix="/api/v1/files", tags=["files"],
                   responses=error_responses(401, 403, 422, 429, 503))
Reader = Annotated[Principal, Depends(Allow(P.TOOLS_READ))]
Writer = Annotated[Principal, Depends(Allow(P.TOOLS_WRITE))]
FilePath = Annotated[str, Path(description="Relative to the workspace, folders separated by `/`; no `..`, not "
                                            "absolute.")]
INVALID_PATH = {422: {"model": ErrorOut, "description": "`path_outside_workspace` (absolute, `..`, or a symlink "
                                                        "out), `path_invalid`, `path_reserved` (`.save-…` names)"}}
NOT_FOUND = {404: {"model": ErrorOut, "description": "`file_not_found`"}}
UPLOAD_BODY = {"requestBody": {"required": False, "description": "The file's bytes, as they are.",
                               "content": {RAW_BODY: {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}}
DOWNLOAD = {200: {"description": "The file's bytes, with the media type its name suggests",
                  "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}}


def _out(info: files.FileInfo) -> FileOut:
    return FileOut(path=info.path, bytes=info.bytes, modified=info.modified, content_type=info.content_type)


def _audit_details(path: str, result: FileOut | None = None) -> dict:
    return {"path": path[:1000], **({"bytes": result.bytes} if result is not None else {})}


@router.put("/{path:path}", response_model=FileOut, openapi_extra=UPLOAD_BODY,
            responses={201: {"model": FileOut, "description": "A new file"}, **INVALID_PATH,
                       409: {"model": ErrorOut, "description": "`is_a_directory`, or `not_a_directory` (a folder "
                                                              "of the path is a file)"},
                       413: {"model": ErrorOut, "description": "`file_too_large` (over "
                             "`AGENTMEM_WORKSPACE_UPLOAD_MAX_BYTES`), `workspace_quota_exceeded` (details: "
                             "`quota_bytes`, `used_bytes`), or `payload_too_large`"}})
@audited("file", target=lambda path: path[:100], details=lambda path, result: _audit_details(path, result))
async def upload_file(path: FilePath, request: Request, response: Response, who: Writer) -> FileOut:
    """Upload a file: the request body is its bytes. Replaces a file already at `path` (200); a new one is 201.

    Folders are made as needed. The upload is all or nothing: a body over the file size limit or the
    workspace's quota is refused (413) as soon as it passes it, and leaves nothing. The file tools
    (`file_read`, `file_search`) see it at once.
    """
    info, created = await files.save_upload(who.org_id, path, request.stream())
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _out(info)


@router.get("", response_model=Page[FileOut])
async def list_files(who: Reader,
                     prefix: Annotated[str, Query(max_length=1000, description="Only paths starting with this.")] = "",
                     limit: Annotated[int, Query(ge=1, le=files.LIST_LIMIT)] = 100,
                     cursor: Annotated[str | None, Query(max_length=2000)] = None) -> Page[FileOut]:
    """Your workspace's files by path, with their size, last change and media type."""
    items, next_cursor = await asyncio.to_thread(files.list_files, who.org_id, prefix=prefix, cursor=cursor,
                                                 limit=limit)
    return Page[FileOut](items=[_out(i) for i in items], next_cursor=next_cursor)


@router.get("/{path:path}", response_class=StreamingResponse, responses={**DOWNLOAD, **NOT_FOUND, **INVALID_PATH})
async def download_file(path: FilePath, who: Reader) -> StreamingResponse:
    """Download a file, streamed, as an attachment named after it (`filename*` carries any non-ASCII name)."""
    info, handle = await asyncio.to_thread(files.open_file, who.org_id, path)
    headers = {"Content-Length": str(info.bytes), "Content-Disposition": files.content_disposition(info.path),
               "Last-Modified": info.modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
               # What a user uploaded is never run as a page of this origin, whatever its type says.
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    return StreamingResponse(files.read_chunks(handle), media_type=info.content_type, headers=headers)


@router.delete("/{path:path}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**NOT_FOUND, **INVALID_PATH})
@audited("file", target=lambda path: path[:100], failed_too=True, details=lambda path: _audit_details(path))
async def delete_file(path: FilePath, who: Writer) -> Response:
    """Delete a file (its folders stay)."""
    await asyncio.to_thread(files.delete_file, who.org_id, path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
