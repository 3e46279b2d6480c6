"""The archive format: a gzip-compressed tar of one JSON Lines file per kind, then `manifest.json`.

The manifest comes last because it carries what only the end of writing knows: the count, size and
sha256 of every member. Reading validates everything before anything is stored: the gzip stream and
the tar are whole, the manifest is there with a format this version reads, every member it lists is
there with its checksum and count, and every line is a JSON object with its kind's required fields.
A truncated or altered archive fails here with `archive_corrupt` or `archive_checksum_mismatch`.

Pure and synchronous (files on local disk): the export and import jobs call it in a thread.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import PermanentJobError
from pipelines.exports.kinds import BY_NAME, Kind

FORMAT = "agentmem-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ArchiveCorrupt(PermanentJobError):
    code = "archive_corrupt"


class ArchiveChecksumMismatch(PermanentJobError):
    code = "archive_checksum_mismatch"


class ArchiveUnsupported(PermanentJobError):
    code = "archive_format_unsupported"


@dataclass
class _Member:
    kind: Kind
    path: Path
    handle: IO[bytes]
    digest: Any = field(default_factory=hashlib.sha256)
    count: int = 0
    size: int = 0


class ArchiveWriter:
    """Writes members line by line into files under `folder`, hashing as it goes; `finish` packs the archive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.members: dict[str, _Member] = {}

    def open(self, kind: Kind) -> None:
        """Start the member of a kind (empty until rows are written)."""
        path = self.folder / kind.member
        self.members[kind.name] = _Member(kind, path, path.open("wb"))

    def write(self, kind: Kind, rows: list[dict[str, Any]]) -> None:
        """Append rows to their kind's member, one JSON object a line."""
        member = self.members[kind.name]
        data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in rows)
        member.handle.write(data)
        member.digest.update(data)
        member.count += len(rows)
        member.size += len(data)

    def finish(self, manifest: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """Pack every member and the manifest (with their counts and checksums) into one .tar.gz; (path, manifest)."""
        for member in self.members.values():
            member.handle.close()
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest,
                    "members": {m.kind.name: {"file": m.kind.member, "count": m.count, "bytes": m.size,
                                              "sha256": m.digest.hexdigest()} for m in self.members.values()}}
        path = self.folder / "archive.tar.gz"
        with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for member in self.members.values():
                tar.add(member.path, arcname=member.kind.member, recursive=False)
            body = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        return path, manifest


READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError)


# A longer line (or manifest) is refused rather than held in memory: no row comes near it.
MAX_LINE_BYTES = 64 << 20
MAX_MANIFEST_BYTES = 16 << 20


def _raw_lines(handle: IO[bytes], member: str) -> Iterator[bytes]:
    """Every line of a member, each at most MAX_LINE_BYTES (else ArchiveCorrupt)."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES:
            raise ArchiveCorrupt(f"{member} has a line over {MAX_LINE_BYTES} bytes", details={"member": member})
        yield line


def _lines(handle: IO[bytes], member: str) -> Iterator[bytes]:
    for line in _raw_lines(handle, member):
        if line.strip():
            yield line


def _check_row(kind: Kind, number: int, line: bytes) -> None:
    try:
        row = json.loads(line)
    except ValueError:
        raise ArchiveCorrupt(f"{kind.member} line {number} is not JSON",
                             details={"member": kind.member, "line": number}) from None
    if not isinstance(row, dict) or any(row.get(f) is None for f in kind.required):
        raise ArchiveCorrupt(f"{kind.member} line {number} lacks a required field ({', '.join(kind.required)})",
                             details={"member": kind.member, "line": number})


def _check_manifest(manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveCorrupt("manifest.json is not an AgentMem export manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveUnsupported(f"archive format version {manifest.get('format_version')!r}; this version reads "
                                 f"{FORMAT_VERSION}", details={"format_version": manifest.get("format_version")})
    members = manifest.get("members")
    if not isinstance(members, dict) or any(name not in BY_NAME or not isinstance(m, dict)
                                            for name, m in members.items()):
        raise ArchiveCorrupt("manifest.json lists members this version doesn't know")
    return manifest


def validate(path: Path) -> dict[str, Any]:
    """Read the whole archive and check it (see the module's docstring); its manifest, or a PermanentJobError."""
    seen: dict[str, dict[str, Any]] = {}
    manifest: Any = None
    try:
        with tarfile.open(path, "r|gz") as tar:
            for info in tar:
                if info.name == MANIFEST:
                    handle = tar.extractfile(info)
                    if handle is None or info.size > MAX_MANIFEST_BYTES:
                        raise ArchiveCorrupt("manifest.json is not a readable file of at most 16 MiB")
                    manifest = json.loads(handle.read())
                    continue
                kind = next((k for k in BY_NAME.values() if k.member == info.name), None)
                handle = tar.extractfile(info) if info.isfile() else None
                if kind is None or handle is None or info.name in seen:
                    raise ArchiveCorrupt(f"unexpected member {info.name!r} in the archive",
                                         details={"member": info.name[:200]})
                digest, count = hashlib.sha256(), 0
                for line in _raw_lines(handle, kind.member):
                    digest.update(line)
                    if line.strip():
                        count += 1
                        _check_row(kind, count, line)
                seen[kind.name] = {"count": count, "sha256": digest.hexdigest()}
    except READ_ERRORS as exc:
        raise ArchiveCorrupt(f"the archive can't be read to its end ({type(exc).__name__}: {exc}); is it "
                             "truncated?") from None
    except ValueError as exc:  # the manifest is not JSON
        raise ArchiveCorrupt(f"manifest.json is not JSON ({exc})") from None
    if manifest is None:
        raise ArchiveCorrupt("the archive has no manifest.json (it comes last: the archive is probably truncated)")
    manifest = _check_manifest(manifest)
    for name, listed in manifest["members"].items():
        found = seen.pop(name, None)
        if found is None:
            raise ArchiveCorrupt(f"{name}.jsonl is listed in the manifest but missing", details={"member": name})
        if found["sha256"] != listed.get("sha256") or found["count"] != listed.get("count"):
            raise ArchiveChecksumMismatch(f"{name}.jsonl does not match its manifest checksum or count",
                                          details={"member": name, "expected": listed.get("sha256"),
                                                   "actual": found["sha256"]})
    if seen:
        raise ArchiveCorrupt("the archive holds members its manifest doesn't list", details={"members": sorted(seen)})
    return manifest


def read_rows(path: Path, kind: Kind, batch: int) -> Iterator[list[dict[str, Any]]]:
    """A validated archive's rows of one kind, in batches."""
    with tarfile.open(path, "r:gz") as tar:
        handle = tar.extractfile(kind.member)
        if handle is None:
            return
        rows: list[dict[str, Any]] = []
        for line in _lines(handle, kind.member):
            rows.append(json.loads(line))
            if len(rows) >= batch:
                yield rows
                rows = []
        if rows:
            yield rows
