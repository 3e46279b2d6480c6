"""Workspace files over HTTP: upload, list, download and delete files of an organization's workspace.

The same folder the built-in file tools use (`pipelines.tools.workspace`), with the same path rules:
relative, no `..`, nothing resolving outside through symlinks (`path_outside_workspace`). An upload
streams to a temporary file in the workspace, counting bytes as they come, and is renamed into place
under the workspace's lock once it is whole and within the quota (`pipelines.tools.quota`): a refused
or broken upload leaves nothing behind, and a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import mimetypes
import os
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import quote

from core.errors import AppError, Conflict, InvalidInput, NotFound
from core.settings import get_settings
from pipelines.tools import quota, workspace
from pipelines.tools.workspace import MAX_PATH_CHARS, make_dirs, workspace_root

CHUNK_BYTES = 65_536
MAX_NAME_BYTES = 255  # a file name's limit on Linux file systems
LIST_LIMIT = 1000


class FileTooLarge(AppError):
    """An upload larger than AGENTMEM_WORKSPACE_UPLOAD_MAX_BYTES."""

    status_code, code = 413, "file_too_large"


class FileNotFound(NotFound):
    code = "file_not_found"


@dataclass(frozen=True)
class FileInfo:
    """A file of the workspace as the API shows it."""

    path: str
    bytes: int
    modified: datetime
    content_type: str


def check_path(path: str) -> PurePosixPath:
    """A file path as the file tools read it, refused (422) when it leaves the workspace, names no file,
    has a name the file system can't hold, or names the workspace's own temporary files."""
    details = {"field": "path", "path": path[:MAX_PATH_CHARS]}
    pure = workspace.check_relative(path) if path else PurePosixPath()
    if len(path) > MAX_PATH_CHARS or not pure.parts or pure.parts == (".",):
        raise InvalidInput(f"path must name a file, in at most {MAX_PATH_CHARS} characters", code="path_invalid",
                           details=details)
    for part in pure.parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise InvalidInput(f"each name in path is at most {MAX_NAME_BYTES} bytes", code="path_invalid",
                               details=details)
        if part.startswith(quota.TEMP_PREFIX):
            raise InvalidInput(f"names starting with {quota.TEMP_PREFIX!r} are the workspace's own",
                               code="path_reserved", details=details)
    return pure


def content_type_of(path: str) -> str:
    """The media type a file's name suggests; `application/octet-stream` when it suggests none."""
    kind, encoding = mimetypes.guess_type(PurePosixPath(path).name, strict=False)
    if kind is None or encoding is not None:  # `x.tar.gz` is gzip bytes, not a tar served as gzip-encoded
        return "application/gzip" if encoding == "gzip" else "application/octet-stream"
    return kind


def content_disposition(path: str, kind: str = "attachment") -> str:
    """A Content-Disposition header for the file's name, safe for any name (RFC 6266): an ASCII `filename`
    fallback and the exact UTF-8 name as `filename*` (RFC 5987)."""
    name = PurePosixPath(path).name
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name) or "download"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='', errors='surrogateescape')}"


def _info(path: str, info: os.stat_result) -> FileInfo:
    return FileInfo(path=path, bytes=info.st_size, modified=datetime.fromtimestamp(info.st_mtime, UTC),
                    content_type=content_type_of(path))


def _place(root: Path, path: str) -> Path:
    target = workspace.resolve(root, path)
    if target.is_dir():
        raise Conflict(f"{path!r} is a folder", code="is_a_directory", details={"path": path})
    return target


def _commit(root: Path, path: str, tmp: str, size: int) -> tuple[FileInfo, bool]:
    with quota.locked(root):
        target = _place(root, path)
        quota.check(root, target, size, get_settings().workspace_quota_bytes)
        try:
            make_dirs(target.parent)
        except (NotADirectoryError, FileExistsError):
            pass  # told below
        if not target.parent.is_dir():
            raise Conflict(f"a folder of {path!r} is a file", code="not_a_directory", details={"path": path})
        target = _place(root, path)  # a symlink planted meanwhile among the new folders is caught here
        created = not os.path.lexists(target)
        os.replace(tmp, target)  # replaces a symlink itself rather than following it
        return _info(path, os.stat(target)), created


async def save_upload(org_id: uuid.UUID, path: str, chunks: AsyncIterator[bytes]) -> tuple[FileInfo, bool]:
    """Store the streamed bytes at `path`, replacing any file there; the file and whether it is new.

    FileTooLarge or QuotaExceeded (413) as soon as the bytes read pass a limit; nothing is left behind
    on any failure, a client that went away included."""
    settings = get_settings()
    check_path(path)
    root = workspace_root(org_id)
    await asyncio.to_thread(make_dirs, root)
    target = await asyncio.to_thread(_place, root, path)
    limit = settings.workspace_upload_max_bytes
    room = settings.workspace_quota_bytes - (await asyncio.to_thread(quota.usage_bytes, root)
                                             - quota.size_of(target))
    fd, tmp = tempfile.mkstemp(dir=root, prefix=quota.TEMP_PREFIX)
    try:
        written = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                written += len(chunk)
                if written > limit:
                    raise FileTooLarge(f"the file is larger than {limit} bytes", details={"max_bytes": limit})
                if written > room:  # checked again, exactly, under the lock before the rename
                    raise quota.QuotaExceeded(
                        f"the upload would pass the workspace's quota of {settings.workspace_quota_bytes} bytes",
                        details={"quota_bytes": settings.workspace_quota_bytes,
                                 "used_bytes": settings.workspace_quota_bytes - room, "bytes": written})
                fh.write(chunk)  # a chunk of at most a few tens of KiB into the page cache: no thread hop
        return await asyncio.to_thread(_commit, root, path, tmp, written)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_file(org_id: uuid.UUID, path: str) -> tuple[FileInfo, BinaryIO]:
    """The file at `path` and an open handle on it (the caller closes it); FileNotFound if there is none."""
    check_path(path)
    target = workspace.resolve(workspace_root(org_id), path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)  # resolved already: a symlink now is a swap
    except OSError:  # missing, a folder, a component that is a file, a symlink swapped in (ELOOP)
        raise FileNotFound(f"no file {path!r} in the workspace", details={"path": path}) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a folder opens too
        os.close(fd)
        raise FileNotFound(f"no file {path!r} in the workspace", details={"path": path})
    return _info(str(PurePosixPath(path)), info), os.fdopen(fd, "rb")


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    """The handle's bytes in chunks, closing it at the end (or when the reader stops early)."""
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _encode_cursor(path: str) -> str:
    return base64.urlsafe_b64encode(path.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor",
                           details={"cursor": cursor[:100]}) from exc


def list_files(org_id: uuid.UUID, *, prefix: str = "", cursor: str | None = None,
               limit: int = 100) -> tuple[list[FileInfo], str | None]:
    """The workspace's files whose path starts with `prefix`, by path, a page at a time; and the next cursor."""
    after = _decode_cursor(cursor) if cursor else None
    root = workspace_root(org_id)
    if not root.is_dir():
        return [], None
    base = str(root.resolve())
    found: list[tuple[str, os.stat_result]] = []
    for folder, folders, names in os.walk(base):  # symlinked folders are listed as names, never entered
        folders[:] = [f for f in folders if not f.startswith(quota.TEMP_PREFIX)]
        for name in names:
            if name.startswith(quota.TEMP_PREFIX):
                continue
            rel = os.path.relpath(os.path.join(folder, name), base)
            if any("\udc80" <= c <= "\udcff" for c in rel):
                continue  # bytes that are no UTF-8 (planted on disk): no URL or JSON names them
            if not rel.startswith(prefix) or (after is not None and rel <= after):
                continue
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(info.st_mode):
                    found.append((rel, info))
    found.sort(key=lambda item: item[0])
    page = [_info(rel, info) for rel, info in found[:limit]]
    return page, _encode_cursor(page[-1].path) if len(found) > limit else None


def delete_file(org_id: uuid.UUID, path: str) -> None:
    """Remove the file at `path`; FileNotFound if there is none (a folder is none)."""
    check_path(path)
    target = workspace.resolve(workspace_root(org_id), path)
    try:
        info = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFound(f"no file {path!r} in the workspace", details={"path": path}) from None
    if not stat.S_ISREG(info.st_mode):
        raise FileNotFound(f"no file {path!r} in the workspace", details={"path": path})
    try:
        os.unlink(target)
    except FileNotFoundError:  # a concurrent delete won
        raise FileNotFound(f"no file {path!r} in the workspace", details={"path": path}) from None
