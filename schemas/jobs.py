"""Job API models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

from schemas.enums import PUBLIC_JOB_KINDS, JobKind, JobStatus

# A job kind as the API documents it: internal kinds (benchmarks' no-op) are left out of the schema.
PublicJobKind = Annotated[str, PlainValidator(JobKind), PlainSerializer(str),
                          WithJsonSchema({"type": "string", "enum": list(PUBLIC_JOB_KINDS), "title": "JobKind"})]


class JobProgress(BaseModel):
    done: int = Field(description="Units of work finished (e.g. memories embedded).")
    total: int = Field(description="Units of work in the job.")
    message: str | None = None


class JobError(BaseModel):
    code: str = Field(description="Stable error code, e.g. `embedding_unavailable`, `time_limit_exceeded`.")
    message: str


class JobUsage(BaseModel):
    """LLM tokens a job spent, over all its attempts, and what they cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    calls: int = Field(default=0, description="Calls made to LLM providers.")
    cost_usd: float | None = Field(default=None, description="US dollars at the prices of the LLM config (chat "
                                   "calls); null when it sets none.")


class JobOut(BaseModel):
    """A unit of background work and its state."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: PublicJobKind
    status: JobStatus
    progress: JobProgress
    result: dict[str, Any] | None = None
    error: JobError | None = Field(default=None,
                                   description="The last error: final when failed, the latest while retrying.")
    attempts: int = Field(description="How many times a worker has started this job.")
    max_attempts: int
    cancel_requested: bool
    idempotency_key: str | None = None
    parent_id: uuid.UUID | None = None
    request_id: str | None = None
    worker: str | None = Field(default=None, description="host:pid of the worker process that last ran the job.")
    usage: JobUsage | None = Field(default=None, description="LLM tokens spent; null for jobs that call no LLM.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, job: Any) -> JobOut:
        return cls(
            id=job.id, kind=job.kind, status=job.status,
            progress=JobProgress(done=job.progress_done, total=job.progress_total, message=job.progress_message),
            result=job.result,
            error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            attempts=job.attempts, max_attempts=job.max_attempts, cancel_requested=job.cancel_requested,
            idempotency_key=job.idempotency_key, parent_id=job.parent_id, request_id=job.request_id,
            worker=job.worker, usage=job.usage,
            created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
            finished_at=job.finished_at,
        )
