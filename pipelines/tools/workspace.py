"""Built-in file tools: `file_save`, `file_read`, `file_search` over an organization's workspace directory.

Each organization has one directory, `<workspace root>/<org id>`. A path is relative to it: an
absolute path, a `..` component, or anything that resolves (through symlinks) outside it is
refused with `path_outside_workspace` - at request time when the path alone shows it, and again
by the job, which resolves it on disk. The tools run in the worker itself, without a subprocess:
they only read and write files of that directory, with sizes capped.

Every folder, from the workspaces root down, is made 0700 whatever the umask, so no other user
can list which organizations use file tools or read what they saved; a worker checks (and fixes)
the root and the organizations' folders when it starts (`check_workspaces`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import InvalidInput, PermanentJobError
from core.settings import get_settings
from pipelines.tools import quota

log = logging.getLogger(__name__)
MAX_RESULTS = 100
DIR_MODE = 0o700
MAX_PATH_CHARS = 1000
BUILTIN_NAMESPACE = uuid.UUID("6f1c1e8e-3c55-4d55-9a49-0c8a1f0b7a11")


class PathOutsideWorkspace(InvalidInput, PermanentJobError):
    """A path that is absolute, climbs with `..`, or resolves outside the organization's workspace."""

    status_code, code = 422, "path_outside_workspace"


class WorkspaceFileError(PermanentJobError):
    """A file tool could not do what was asked (missing file, too large); the code says which."""


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    json_schema: dict[str, Any]
    tags: tuple[str, ...] = ("builtin", "files")

    @property
    def id(self) -> uuid.UUID:
        return uuid.uuid5(BUILTIN_NAMESPACE, self.name)


_PATH = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_CHARS,
         "description": "Relative to the organization's workspace; no `..`, not absolute."}
BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("file_save", "Write a text file in the organization's workspace (replacing it; folders are made).",
            {"type": "object", "properties": {"path": _PATH, "content": {"type": "string"}},
             "required": ["path", "content"], "additionalProperties": False}),
    Builtin("file_read", "Read a text file of the organization's workspace.",
            {"type": "object", "properties": {"path": _PATH}, "required": ["path"], "additionalProperties": False}),
    Builtin("file_search", "Find files of the workspace by glob pattern, and lines containing `query` "
            "(case-insensitive) when given.",
            {"type": "object", "properties": {
                "glob": {"type": "string", "minLength": 1, "maxLength": 200, "default": "**/*"},
                "query": {"type": "string", "minLength": 1, "maxLength": 1000}},
             "additionalProperties": False}),
    # Carried out by pipelines/tools/web_search.py; there only when AGENTMEM_WEB_SEARCH_URL is set.
    Builtin("web_search", "Search the web; the results' titles, URLs and snippets.",
            {"type": "object", "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 500},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 50,
                                "description": "How many results at most (the service may cap it lower)."}},
             "required": ["query"], "additionalProperties": False}, tags=("builtin", "web")),
)}
FILE_TOOLS = frozenset({"file_save", "file_read", "file_search"})
BUILTIN_IDS: dict[uuid.UUID, Builtin] = {b.id: b for b in BUILTINS.values()}


def builtin_enabled(name: str) -> bool:
    """Whether a built-in is on in this process: the file tools always, `web_search` when an endpoint is set."""
    return name in FILE_TOOLS or (name == "web_search" and bool(get_settings().web_search_url))


def enabled_builtins() -> list[Builtin]:
    """The built-in tools that are on, in their listing order."""
    return [b for b in BUILTINS.values() if builtin_enabled(b.name)]


class WorkspaceUnsafe(RuntimeError):
    """The workspaces folder (or an organization's) belongs to another user: the worker can't keep it private."""


def workspaces_dir() -> Path:
    """The folder holding every organization's workspace."""
    settings = get_settings()
    return Path(settings.tool_workspace_dir or settings.data_dir / "workspaces").absolute()


def workspace_root(org_id: uuid.UUID) -> Path:
    """The organization's workspace directory (not created)."""
    return workspaces_dir() / str(org_id)


def make_dirs(path: Path) -> None:
    """Make `path` and every missing folder above it with mode 0700 exactly (mkdir alone would apply the umask)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:  # a concurrent save made it, with the same mode
            continue
        os.chmod(folder, DIR_MODE)


def check_workspaces() -> None:
    """At worker start: the workspaces folder and each organization's are the worker's and 0700; fix the
    mode, or refuse (WorkspaceUnsafe, logged) when another user owns one."""
    root = workspaces_dir()
    if not root.is_dir():
        return  # the first file_save makes it
    for folder in (root, *(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())):
        info = folder.stat()
        if info.st_uid != os.geteuid():
            message = (f"{folder} belongs to uid {info.st_uid}, not to this worker (uid {os.geteuid()}): the "
                       f"file tools' workspaces can't be kept private; chown -R it to the worker's user")
            log.error(message)
            raise WorkspaceUnsafe(message)
        mode = stat.S_IMODE(info.st_mode)
        if mode != DIR_MODE:
            os.chmod(folder, DIR_MODE)
            log.warning("%s was %03o, now 700: other users could list or read organizations' workspaces",
                        folder, mode)


def check_relative(path: str, field: str = "path") -> PurePosixPath:
    """Refuse, without touching the disk, a path that is absolute or climbs out with `..`."""
    pure = PurePosixPath(path)
    if not path or "\x00" in path or pure.is_absolute() or path.startswith("\\") or ".." in pure.parts \
            or ".." in path.replace("\\", "/").split("/"):
        raise PathOutsideWorkspace(f"{field} {path[:200]!r} must be relative to the workspace, without `..`",
                                   details={"field": field, "path": path[:MAX_PATH_CHARS]})
    return pure


def check_arguments(name: str, arguments: dict[str, Any]) -> None:
    """The request-time check of a built-in's arguments (the schema was checked already)."""
    if name in ("file_save", "file_read"):
        check_relative(arguments["path"])
    elif name == "file_search":
        check_relative(arguments.get("glob", "**/*"), "glob")


def resolve(root: Path, path: str) -> Path:
    """The file `path` names in `root`, symlinks followed; PathOutsideWorkspace if that is outside `root`."""
    pure = check_relative(path)
    base = root.resolve()
    target = (base / pure).resolve()  # follows symlinks: one pointing out is caught here
    if target != base and not target.is_relative_to(base):
        raise PathOutsideWorkspace(f"path {path[:200]!r} resolves outside the workspace",
                                   details={"field": "path", "path": path[:MAX_PATH_CHARS]})
    return target


def file_save(root: Path, path: str, content: str, *, max_bytes: int) -> dict[str, Any]:
    """Write `content` at `path` atomically (a temporary file renamed over it), within the workspace's quota."""
    data = content.encode()
    if len(data) > max_bytes:
        raise WorkspaceFileError(f"content is {len(data)} bytes; the most is {max_bytes}", code="file_too_large",
                                 details={"bytes": len(data), "max_bytes": max_bytes})
    make_dirs(root)
    target = resolve(root, path)
    if target.is_dir():
        raise WorkspaceFileError(f"{path!r} is a folder", code="is_a_directory", details={"path": path})
    with quota.locked(root):
        quota.check(root, target, len(data), get_settings().workspace_quota_bytes)
        with contextlib.suppress(NotADirectoryError, FileExistsError):
            make_dirs(target.parent)
        if not target.parent.is_dir():
            raise WorkspaceFileError(f"a folder of {path!r} is a file", code="not_a_directory", details={"path": path})
        resolve(root, path)  # the folders just made can't have moved it, but a symlink in between could
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=quota.TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)  # replaces a symlink itself rather than following it
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return {"path": str(PurePosixPath(path)), "bytes": len(data)}


def file_read(root: Path, path: str, *, max_bytes: int) -> dict[str, Any]:
    """The text of the file at `path` (undecodable bytes replaced)."""
    target = resolve(root, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        raise WorkspaceFileError(f"no file {path!r} in the workspace", code="file_not_found",
                                 details={"path": path}) from None
    except IsADirectoryError:
        raise WorkspaceFileError(f"{path!r} is a folder", code="is_a_directory", details={"path": path}) from None
    with os.fdopen(fd, "rb") as fh:
        if not os.path.isfile(target):
            raise WorkspaceFileError(f"{path!r} is not a regular file", code="not_a_file", details={"path": path})
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise WorkspaceFileError(f"{path!r} is larger than {max_bytes} bytes", code="file_too_large",
                                 details={"path": path, "max_bytes": max_bytes})
    return {"path": str(PurePosixPath(path)), "content": data.decode("utf-8", errors="replace"), "bytes": len(data)}


def file_search(root: Path, *, glob: str = "**/*", query: str | None = None, max_bytes: int) -> dict[str, Any]:
    """Files matching `glob`, or with `query`: their lines containing it; at most MAX_RESULTS, sorted by path."""
    check_relative(glob, "glob")
    if not root.is_dir():
        return {"matches": [], "truncated": False}
    base = root.resolve()
    matches: list[dict[str, Any]] = []
    needle = query.lower() if query else None
    for candidate in sorted(base.glob(glob)):
        if candidate.is_symlink() or not candidate.is_file() or not candidate.resolve().is_relative_to(base):
            continue
        rel = candidate.relative_to(base).as_posix()
        if rel.startswith(quota.TEMP_PREFIX) or "/" + quota.TEMP_PREFIX in rel:
            continue
        if needle is None:
            matches.append({"path": rel, "bytes": candidate.stat().st_size})
        elif candidate.stat().st_size <= max_bytes:
            text = candidate.read_bytes().decode("utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                if needle in line.lower():
                    matches.append({"path": rel, "line": number, "text": line[:500]})
                    if len(matches) > MAX_RESULTS:
                        break
        if len(matches) > MAX_RESULTS:
            break
    return {"matches": matches[:MAX_RESULTS], "truncated": len(matches) > MAX_RESULTS}


def run_builtin(org_id: uuid.UUID, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run a built-in file tool for the organization; its output dict, or a PermanentJobError with a code."""
    root = workspace_root(org_id)
    cap = get_settings().tool_workspace_file_max_bytes
    if name == "file_save":
        return file_save(root, arguments["path"], arguments["content"], max_bytes=cap)
    if name == "file_read":
        return file_read(root, arguments["path"], max_bytes=cap)
    if name == "file_search":
        return file_search(root, glob=arguments.get("glob", "**/*"), query=arguments.get("query"), max_bytes=cap)
    raise ValueError(f"no built-in tool {name!r}")
