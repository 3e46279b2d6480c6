"""Source (uploaded document) API models, and the checks on an upload's form fields."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from schemas.enums import SourceStatus
from schemas.inputs import InputRejected, Metadata, strict_json_loads
from schemas.jobs import JobError

MIN_CHUNK_CHARS, MAX_CHUNK_CHARS = 100, 8000
FILENAME_MAX_CHARS = 255
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\"\\/]")
_METADATA = TypeAdapter(Metadata)


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The `metadata` form field: a JSON object as memories' metadata is (InputRejected or ValueError if not)."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = strict_json_loads(raw)
    except json.JSONDecodeError as exc:
        raise InputRejected(f"metadata is not valid JSON: {exc.msg}", kind="json_invalid",
                            loc=("body", "metadata")) from None
    if not isinstance(value, dict):
        raise InputRejected("metadata must be a JSON object", kind="dict_type", loc=("body", "metadata"))
    try:
        return _METADATA.validate_python(value)
    except ValidationError as exc:
        raise InputRejected(exc.errors()[0]["msg"], kind="value_error", loc=("body", "metadata")) from None


def check_chunking(size: int, overlap: int) -> None:
    """An overlap of at most half the chunk size (more would repeat most of every chunk)."""
    if overlap > size // 2:
        raise InputRejected(f"chunk_overlap ({overlap}) may be at most half of chunk_size ({size})",
                            kind="value_error", loc=("body", "chunk_overlap"))


def clean_filename(name: str | None) -> str:
    """The name to keep for an upload: its last path part, without control characters or quotes, bounded."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE_NAME.sub("", unicodedata.normalize("NFC", base)).strip()
    return base[:FILENAME_MAX_CHARS] or "upload"


class SourceError(JobError):
    """Why a source failed: `source_unreadable`, `source_empty`, `source_too_long`, `time_limit_exceeded`, …"""


class SourceOut(BaseModel):
    """An uploaded document and what became of it."""

    id: uuid.UUID
    filename: str
    media_type: str = Field(description="What the bytes are (sniffed, not taken from the client): `text/plain`, "
                                        "`text/markdown`, `text/html`, `application/pdf` or the DOCX type.")
    size_bytes: int
    sha256: str = Field(description="Of the bytes: identical bytes in the same scope are the same source.")
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = Field(description="Copied into every memory made from the document.")
    chunk_size: int
    chunk_overlap: int
    status: SourceStatus = Field(description="`queued`, `processing`, `ready` (its memories are searchable), "
                                             "`failed` (see `error`; nothing was stored) or `cancelled`.")
    chunks: int | None = Field(default=None, description="Chunks stored as memories, once `ready`.")
    memories: int = Field(description="Its memories that are live now (deleting one lowers this).")
    pages: int | None = Field(default=None, description="Pages of a PDF, once read.")
    job_id: uuid.UUID | None = Field(default=None, description="The `ingest_source` job: follow it at "
                                                               "`/api/v1/jobs/{id}/events`.")
    error: SourceError | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: Any) -> SourceOut:
        r = view.row
        error = view.error
        return cls(id=r.id, filename=r.filename, media_type=r.media_type, size_bytes=r.size_bytes, sha256=r.sha256,
                   user_id=r.user_id, agent_id=r.agent_id, run_id=r.run_id, metadata=r.meta,
                   chunk_size=r.chunk_size, chunk_overlap=r.chunk_overlap, status=view.status, chunks=r.chunks,
                   memories=view.memories, pages=r.pages, job_id=r.job_id,
                   error=SourceError(code=error[0], message=error[1]) if error else None,
                   created_at=r.created_at, updated_at=r.updated_at)
