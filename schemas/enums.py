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
    AGENT_TURN = "agent_turn"
    SUMMARIZE_CONVERSATION = "summarize_conversation"
    # Benchmarks only (AGENTMEM_BENCH_JOBS): a job that does nothing, to measure what the job machinery costs.
    NOOP = "noop"
    # MCP servers of an organization (AgentMem as an MCP client): connect and list tools; call one tool.
    MCP_TEST = "mcp_test"
    MCP_CALL = "mcp_call"
    INGEST_SOURCE = "ingest_source"
    # A maintenance task (pipelines/maintenance): run now through the API or by a schedule.
    MAINTENANCE = "maintenance"
    # Export a scope to an archive, import one, delete a scope's memories (pipelines/exports, pipelines/memories).
    EXPORT = "export"
    IMPORT = "import"
    DELETE_MEMORIES = "delete_memories"
    # One event POSTed to one webhook (pipelines/webhooks): retried with backoff, each attempt logged.
    WEBHOOK_DELIVERY = "webhook_delivery"


# The kinds the API documents and accepts in filters: NOOP is internal (benchmarks).
PUBLIC_JOB_KINDS = tuple(k.value for k in JobKind if k is not JobKind.NOOP)


class EventType(StrEnum):
    SNAPSHOT = "snapshot"
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    RETRYING = "retrying"
    # An agent turn's stream: text as it is written, tool calls and their results, each stored message, usage.
    TOKEN = "token"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    MESSAGE = "message"
    USAGE = "usage"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"
    # On the organization's stream only: a webhook was disabled after a run of failed deliveries.
    WEBHOOK_DISABLED = "webhook.disabled"

    @property
    def terminal(self) -> bool:
        return self in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED)


class MemoryEvent(StrEnum):
    """What a version in a memory's history did (`memory_history.event`); NOOP only appears in job results."""

    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


class MessageRole(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MemoryExtraction(StrEnum):
    """What an agent's turns teach memory: nothing, the facts they state (`infer`), or the turns themselves."""

    OFF = "off"
    FACTS = "facts"
    TURNS = "turns"


class SourceStatus(StrEnum):
    """Where an uploaded document stands: its `ingest_source` job queued, running, done or not."""

    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"
