"""Database tables. The DDL itself lives in the Alembic migrations (core/migrations)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import ARRAY, Column, DateTime, Index, LargeBinary, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel


def _now_column() -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()))


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    # What the name looks like (schemas.inputs.name_key): unique among live organizations.
    name_key: str = Field(sa_column=Column(String(300), nullable=False))
    # Per-organization overrides of the quota and rate-limit defaults in Settings (see pipelines/accounts/limits.py).
    limits: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}"))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class User(SQLModel, table=True):
    """An account that signs in; belongs to organizations through memberships."""

    __tablename__ = "users"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    username: str = Field(sa_column=Column(String(100), nullable=False))
    email: str | None = Field(default=None, sa_column=Column(String(320)))
    full_name: str | None = Field(default=None, sa_column=Column(String(200)))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    is_active: bool = True
    is_superuser: bool = False
    # Bumped by a password change or reset: tokens issued before it stop working.
    password_changed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    org_id: uuid.UUID = Field(foreign_key="organizations.id", primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", primary_key=True)
    role: str = Field(sa_column=Column(String(20), nullable=False))
    created_at: datetime = _now_column()


class ApiKey(SQLModel, table=True):
    """An organization's API key. Only a hash of the secret is stored; `prefix` finds the row."""

    __tablename__ = "api_keys"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    name: str = Field(sa_column=Column(String(200), nullable=False))
    prefix: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    secret_hash: str = Field(sa_column=Column(String(128), nullable=False))
    role: str = Field(sa_column=Column(String(20), nullable=False))
    scopes: list[str] | None = Field(default=None, sa_column=Column(ARRAY(String(50))))
    created_by: str | None = Field(default=None, sa_column=Column(String(100)))
    created_at: datetime = _now_column()
    last_used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class AuditLog(SQLModel, table=True):
    """Who did what to which target, from where, with what result. Never holds secrets or bodies."""

    __tablename__ = "audit_logs"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    actor: str = Field(sa_column=Column(String(100), nullable=False))
    action: str = Field(sa_column=Column(String(100), nullable=False))
    target_type: str | None = Field(default=None, sa_column=Column(String(50)))
    target_id: str | None = Field(default=None, sa_column=Column(String(100)))
    result: str = Field(sa_column=Column(String(20), nullable=False))
    status_code: int | None = None
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))
    ip: str | None = Field(default=None, sa_column=Column(String(64)))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}"))
    created_at: datetime = _now_column()


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id", index=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text))
    # Base instructions, and the Jinja2 template that renders them with the agent's blocks (None: the default).
    system: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    prompt_template: str | None = Field(default=None, sa_column=Column(Text))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    # How the agent talks: its LLM (config, model, sampling, context window; schemas.agents.AgentLLM),
    # the step limit of a turn, memories recalled per turn, what a turn teaches memory, its tools.
    llm: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}"))
    max_steps: int = 8
    memory_top_k: int = 5
    memory_extraction: str = Field(default="off", sa_column=Column(String(10), nullable=False, server_default="off"))
    tool_ids: list[uuid.UUID] = Field(default_factory=list, sa_column=Column(ARRAY(UUID(as_uuid=True)),
                                                                             nullable=False, server_default="{}"))
    mcp_server_ids: list[uuid.UUID] = Field(default_factory=list, sa_column=Column(
        ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Block(SQLModel, table=True):
    """A core-memory block: a labelled text with a hard character limit, versioned on every change."""

    __tablename__ = "blocks"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    label: str = Field(sa_column=Column(String(100), nullable=False))
    value: str = Field(default="", sa_column=Column(Text, nullable=False))
    char_limit: int
    description: str | None = Field(default=None, sa_column=Column(Text))
    read_only: bool = False
    # Set: the block is this user's (like memories' user_id); unset: it belongs to the agents it is attached to.
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    rewrite_strategy: str = Field(default="auto", sa_column=Column(String(30), nullable=False))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    # Bumped by every change; the ETag, and the compare-and-swap guard of writers and rewrite jobs.
    version: int = 1
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class BlockVersion(SQLModel, table=True):
    """A block as it was after one change (create, update, revert, rewrite, delete), and who or what made it."""

    __tablename__ = "block_versions"
    __table_args__ = (UniqueConstraint("block_id", "version", name="uq_block_versions_version"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    block_id: uuid.UUID = Field(foreign_key="blocks.id")
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    version: int
    reason: str = Field(sa_column=Column(String(20), nullable=False))
    label: str = Field(sa_column=Column(String(100), nullable=False))
    value: str = Field(sa_column=Column(Text, nullable=False))
    char_limit: int
    description: str | None = Field(default=None, sa_column=Column(Text))
    read_only: bool = False
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    actor: str | None = Field(default=None, sa_column=Column(String(100)))
    job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = _now_column()


class AgentBlock(SQLModel, table=True):
    """A block attached to an agent; `label` mirrors the block's so labels are unique per agent."""

    __tablename__ = "agent_blocks"
    __table_args__ = (UniqueConstraint("agent_id", "label", name="uq_agent_blocks_label"),)
    agent_id: uuid.UUID = Field(foreign_key="agents.id", primary_key=True)
    block_id: uuid.UUID = Field(foreign_key="blocks.id", primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    label: str = Field(sa_column=Column(String(100), nullable=False))
    position: int
    created_at: datetime = _now_column()


class Memory(SQLModel, table=True):
    __tablename__ = "memories"
    __table_args__ = (UniqueConstraint("source_job_id", "source_index", name="uq_memories_source"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    agent_id: str | None = Field(default=None, sa_column=Column(String(255)))
    run_id: str | None = Field(default=None, sa_column=Column(String(255)))
    content: str = Field(sa_column=Column(Text, nullable=False))
    # `metadata` is reserved by SQLAlchemy's declarative base, hence the attribute name.
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    embedding: list[float] | None = Field(default=None, sa_column=Column(Vector()))
    # Hash of the content the embedding was computed from: a stale embedding is visible and fixable.
    embedded_hash: str | None = Field(default=None, sa_column=Column(String(64)))
    # The model that computed `embedding` (core.embedder.model_identity): search compares like with like.
    embedding_model: str | None = Field(default=None, sa_column=Column(String(200)))
    # Past it the memory is gone from reads and search; `purge` deletes it.
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    source_job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    source_index: int | None = None
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class MemoryPassage(SQLModel, table=True):
    """A later passage of a long memory (its first is the memory's own embedding): pipelines/memories/passages.py."""

    __tablename__ = "memory_passages"
    memory_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    ord: int = Field(primary_key=True)
    org_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    # The memory's content hash when this passage was computed: a passage of older content is never read.
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    embedding: list[float] = Field(sa_column=Column(Vector(), nullable=False))
    embedding_model: str | None = Field(default=None, sa_column=Column(String(200)))


class MemoryCount(SQLModel, table=True):
    """An organization's live memories, kept by triggers on `memories` (migration 0015), in stripes that
    concurrent writers seldom share: the organization's count is the sum of its rows."""

    __tablename__ = "memory_counts"
    org_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    stripe: int = Field(primary_key=True)
    live: int = 0


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_org_created", "org_id", "created_at", "id"),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    kind: str = Field(sa_column=Column(String(50), nullable=False))
    status: str = Field(sa_column=Column(String(20), nullable=False, server_default="queued"))
    progress_done: int = 0
    progress_total: int = 0
    progress_message: str | None = Field(default=None, sa_column=Column(Text))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    error_code: str | None = Field(default=None, sa_column=Column(String(100)))
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    max_attempts: int = 6
    cancel_requested: bool = False
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(255)))
    request_hash: str | None = Field(default=None, sa_column=Column(String(64)))
    request_id: str | None = Field(default=None, sa_column=Column(String(64)))
    parent_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    enqueued_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    worker: str | None = Field(default=None, sa_column=Column(String(200)))
    # Who submitted the job (`user:<id>` / `api_key:<id>`), for the audit row of its outcome.
    actor: str | None = Field(default=None, sa_column=Column(String(100)))
    # LLM tokens the job spent: {"prompt_tokens", "completion_tokens", "calls"}.
    usage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))


class LlmConfig(SQLModel, table=True):
    """An organization's OpenAI-compatible provider. The API key is stored encrypted, never returned."""

    __tablename__ = "llm_configs"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    name: str = Field(sa_column=Column(String(100), nullable=False))
    name_key: str = Field(sa_column=Column(String(300), nullable=False))  # unique in the organization
    provider: str = Field(sa_column=Column(String(30), nullable=False))
    base_url: str | None = Field(default=None, sa_column=Column(String(500)))
    chat_model: str = Field(sa_column=Column(String(200), nullable=False))
    api_version: str | None = Field(default=None, sa_column=Column(String(50)))
    api_key_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    api_key_hint: str | None = Field(default=None, sa_column=Column(String(20)))
    max_concurrency: int = 4
    timeout_seconds: float = 60.0
    max_retries: int = 4
    # Limits across all workers (None: none), the model's context window, and prices per million tokens.
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    context_window: int | None = None
    prompt_price_per_million: float | None = None
    completion_price_per_million: float | None = None
    is_default: bool = False
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class MemoryHistory(SQLModel, table=True):
    """One version of a memory: what changed it (ADD / UPDATE / DELETE), from what, to what, by which job."""

    __tablename__ = "memory_history"
    __table_args__ = (UniqueConstraint("memory_id", "version", name="uq_memory_history_version"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    memory_id: uuid.UUID = Field(foreign_key="memories.id")
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    version: int
    event: str = Field(sa_column=Column(String(10), nullable=False))
    old_content: str | None = Field(default=None, sa_column=Column(Text))
    new_content: str | None = Field(default=None, sa_column=Column(Text))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    actor: str | None = Field(default=None, sa_column=Column(String(100)))
    created_at: datetime = _now_column()


class Tool(SQLModel, table=True):
    """An organization's tool: code run in the sandbox with arguments checked against a JSON Schema."""

    __tablename__ = "tools"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    name: str = Field(sa_column=Column(String(100), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    json_schema: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    language: str = Field(sa_column=Column(String(20), nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String(50)), nullable=False,
                                                                    server_default="{}"))
    timeout_seconds: float | None = None
    limits: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}"))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Conversation(SQLModel, table=True):
    """A conversation of an agent (with one end user, optionally); `last_seq` numbers its messages."""

    __tablename__ = "conversations"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    agent_id: uuid.UUID = Field(foreign_key="agents.id")
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    title: str | None = Field(default=None, sa_column=Column(String(500)))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    last_seq: int = 0
    # The rolling summary of messages 1..summary_upto, which the context covers instead of them.
    summary: str | None = Field(default=None, sa_column=Column(Text))
    summary_upto: int = 0
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Message(SQLModel, table=True):
    """One message of a conversation; a turn's steps are keyed by (job_id, step_key), written once."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_messages_seq"),
                      UniqueConstraint("job_id", "step_key", name="uq_messages_step"))
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    conversation_id: uuid.UUID = Field(foreign_key="conversations.id")
    agent_id: uuid.UUID
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    seq: int
    role: str = Field(sa_column=Column(String(20), nullable=False))
    content: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSONB))
    tool_call_id: str | None = Field(default=None, sa_column=Column(String(200)))
    name: str | None = Field(default=None, sa_column=Column(String(200)))
    tokens: int = 0  # the message's estimated size in a prompt
    prompt_tokens: int | None = None  # usage of the LLM call that wrote it (assistant messages)
    completion_tokens: int | None = None
    job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    step_key: str | None = Field(default=None, sa_column=Column(String(200)))
    embedding: list[float] | None = Field(default=None, sa_column=Column(Vector()))
    embedding_model: str | None = Field(default=None, sa_column=Column(String(200)))
    created_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class McpServer(SQLModel, table=True):
    """An organization's MCP server: a stdio command or a streamable-HTTP URL; env and headers stored encrypted."""

    __tablename__ = "mcp_servers"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    name: str = Field(sa_column=Column(String(40), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    transport: str = Field(sa_column=Column(String(20), nullable=False))
    command: str | None = Field(default=None, sa_column=Column(String(500)))
    args: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]"))
    env_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    env_keys: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String(100)), nullable=False,
                                                                        server_default="{}"))
    url: str | None = Field(default=None, sa_column=Column(String(2000)))
    headers_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    header_names: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String(100)), nullable=False,
                                                                            server_default="{}"))
    network: bool = False
    timeout_seconds: float | None = None
    # Bumped by every change: worker pools key running stdio servers by (id, version).
    version: int = 1
    server_info: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    tools: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSONB))
    tools_refreshed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Source(SQLModel, table=True):
    """An uploaded document; its text becomes memories (`source_job_id` = `job_id`) by an `ingest_source` job."""

    __tablename__ = "sources"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    user_id: str | None = Field(default=None, sa_column=Column(String(255)))
    agent_id: str | None = Field(default=None, sa_column=Column(String(255)))
    run_id: str | None = Field(default=None, sa_column=Column(String(255)))
    filename: str = Field(sa_column=Column(String(255), nullable=False))
    media_type: str = Field(sa_column=Column(String(100), nullable=False))
    size_bytes: int
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    chunk_size: int
    chunk_overlap: int
    status: str = Field(sa_column=Column(String(20), nullable=False))
    chunks: int | None = None
    pages: int | None = None
    error_code: str | None = Field(default=None, sa_column=Column(String(100)))
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    actor: str | None = Field(default=None, sa_column=Column(String(100)))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
    deleted_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class SourceBlob(SQLModel, table=True):
    """An upload's bytes, apart from its row so that lists never read them; dropped when the source is deleted."""

    __tablename__ = "source_blobs"
    source_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Archive(SQLModel, table=True):
    """An export's archive (written by its job) or an uploaded import's; the bytes are in `archive_chunks`."""

    __tablename__ = "archives"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    purpose: str = Field(sa_column=Column(String(10), nullable=False))
    job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    size_bytes: int = 0
    sha256: str | None = Field(default=None, sa_column=Column(String(64)))
    manifest: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    # False while the bytes are being written: nothing reads an incomplete archive.
    complete: bool = False
    created_at: datetime = _now_column()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    purged_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ArchiveChunk(SQLModel, table=True):
    """One piece (about a mebibyte) of an archive's bytes, in order of `seq`."""

    __tablename__ = "archive_chunks"
    archive_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), primary_key=True))
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Webhook(SQLModel, table=True):
    """An organization's webhook endpoint: where events of the listed types are POSTed, signed with its secret
    (stored encrypted: the server signs with it; shown once, never returned)."""

    __tablename__ = "webhooks"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    url: str = Field(sa_column=Column(String(2000), nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    event_types: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String(64)), nullable=False))
    secret_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    enabled: bool = True
    # Deliveries that failed for good in a row; reaching `webhook_disable_after_failures` disables the webhook.
    consecutive_failures: int = 0
    disabled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    last_delivery_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_success_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()


class WebhookDelivery(SQLModel, table=True):
    """One attempt to deliver one event to one webhook (a `webhook_delivery` job makes one per try)."""

    __tablename__ = "webhook_deliveries"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID = Field(foreign_key="organizations.id")
    webhook_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    job_id: uuid.UUID = Field(sa_column=Column(UUID(as_uuid=True), nullable=False))
    event_id: str = Field(sa_column=Column(String(64), nullable=False))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    attempt: int
    succeeded: bool
    status_code: int | None = None
    duration_ms: float | None = None
    error_code: str | None = Field(default=None, sa_column=Column(String(100)))
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    response_excerpt: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _now_column()


class Schedule(SQLModel, table=True):
    """A maintenance task run by the scheduler on a cron expression or an interval (org_id None: platform-wide)."""

    __tablename__ = "schedules"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    name: str = Field(sa_column=Column(String(100), nullable=False))
    name_key: str = Field(sa_column=Column(String(300), nullable=False))  # unique per organization
    task: str = Field(sa_column=Column(String(64), nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    cron: str | None = Field(default=None, sa_column=Column(String(200)))
    timezone: str = Field(default="UTC", sa_column=Column(String(64), nullable=False))
    interval_seconds: int | None = None
    enabled: bool = True
    catch_up: str = Field(default="run_once", sa_column=Column(String(20), nullable=False))
    # Set on the defaults the service installs (pipelines/schedules/defaults.py): never installed twice.
    default_name: str | None = Field(default=None, sa_column=Column(String(64)))
    next_run_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_run_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_job_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_by: str | None = Field(default=None, sa_column=Column(String(100)))
    created_at: datetime = _now_column()
    updated_at: datetime = _now_column()
