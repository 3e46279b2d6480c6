"""Enumerations shared by tables, API models and events. Their values are wire format."""

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobKind(StrEnum):
    INGEST_MEMORIES = "ingest_memories"
    EMBED_MEMORY = "embed_memory"
    EXTRACT_FACTS = "extract_facts"
    SUMMARIZE = "summarize"
    BLOCK_REWRITE = "block_rewrite"
    EXECUTE_TOOL = "execute_tool"


class EventType(StrEnum):
    SNAPSHOT = "snapshot"
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        return self in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED)


class MemoryEvent(StrEnum):
    """What a version in a memory's history did (`memory_history.event`); NOOP only appears in job results."""

    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"
