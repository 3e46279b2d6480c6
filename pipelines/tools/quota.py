"""The quota on an organization's workspace: total bytes of its files, checked under a lock when a file lands.

Every write to a workspace (an upload over HTTP, `file_save`) lands the same way: its bytes go to a
temporary `.save-…` file first, then, holding the workspace's lock (an `flock` that every API and
worker process on the machine honours), the bytes already there are counted and the file is renamed
into place only if the total stays within `AGENTMEM_WORKSPACE_QUOTA_BYTES`. Temporary files are not
counted: they are either renamed (and counted by the next write) or removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from core.errors import PermanentJobError

TEMP_PREFIX = ".save-"
LOCK_NAME = TEMP_PREFIX + "quota.lock"


class QuotaExceeded(PermanentJobError):
    """The write would take the organization's workspace past its quota (413; a failed tool job)."""

    status_code, code = 413, "workspace_quota_exceeded"


def usage_bytes(root: Path) -> int:
    """Bytes of the regular files in the workspace, temporary files left out (symlinks neither followed nor counted)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(os.path.join(folder, name))
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
    return total


def size_of(path: Path) -> int:
    """Bytes of the regular file at `path`, 0 when there is none (what replacing it frees)."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def check(root: Path, target: Path, size: int, quota: int) -> None:
    """Refuse (QuotaExceeded) writing `size` bytes at `target` if the workspace would then hold more than `quota`."""
    used = usage_bytes(root) - size_of(target)
    if used + size > quota:
        raise QuotaExceeded(f"the workspace holds {used} bytes; {size} more would pass its quota of {quota} bytes",
                            details={"quota_bytes": quota, "used_bytes": used, "bytes": size})


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the workspace's lock (the workspace folder must exist)."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
