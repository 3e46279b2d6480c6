"""The spine: organizations, users, agents, memories with embeddings and full-text, jobs.

Revision ID: 0001
Revises:
"""
from alembic import op

from core.settings import get_settings

revision = "0001"
down_revision = None


def upgrade() -> None:
    dim = get_settings().embedding_dim
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("""
        CREATE TABLE organizations (
            id uuid PRIMARY KEY,
            name varchar(200) NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("""
        CREATE TABLE users (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            username varchar(100) NOT NULL,
            email varchar(320),
            created_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("CREATE INDEX ix_users_org_id ON users (org_id)")
    op.execute("""
        CREATE TABLE agents (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            name varchar(200) NOT NULL,
            description text,
            created_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("CREATE INDEX ix_agents_org_id ON agents (org_id)")
    op.execute(f"""
        CREATE TABLE memories (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            user_id varchar(255),
            agent_id varchar(255),
            run_id varchar(255),
            content text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            content_hash varchar(64) NOT NULL,
            embedding vector({dim}),
            embedded_hash varchar(64),
            fts tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
            source_job_id uuid,
            source_index integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            CONSTRAINT uq_memories_source UNIQUE (source_job_id, source_index)
        )""")
    op.execute("CREATE INDEX ix_memories_org_created ON memories (org_id, created_at DESC, id DESC) "
               "WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_memories_org_user ON memories (org_id, user_id) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_memories_org_agent ON memories (org_id, agent_id) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_memories_org_run ON memories (org_id, run_id) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_memories_org_hash ON memories (org_id, content_hash)")
    op.execute("CREATE INDEX ix_memories_embedding ON memories USING hnsw (embedding vector_cosine_ops)")
    op.execute("CREATE INDEX ix_memories_fts ON memories USING gin (fts)")
    op.execute("CREATE INDEX ix_memories_metadata ON memories USING gin (metadata jsonb_path_ops)")
    op.execute("""
        CREATE TABLE jobs (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            kind varchar(50) NOT NULL,
            status varchar(20) NOT NULL DEFAULT 'queued',
            progress_done integer NOT NULL DEFAULT 0,
            progress_total integer NOT NULL DEFAULT 0,
            progress_message text,
            payload jsonb NOT NULL DEFAULT '{}'::jsonb,
            result jsonb,
            error_code varchar(100),
            error_message text,
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL DEFAULT 6,
            cancel_requested boolean NOT NULL DEFAULT false,
            idempotency_key varchar(255),
            request_hash varchar(64),
            request_id varchar(64),
            parent_id uuid REFERENCES jobs(id),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            enqueued_at timestamptz,
            started_at timestamptz,
            finished_at timestamptz,
            lease_expires_at timestamptz,
            worker varchar(200),
            CONSTRAINT uq_jobs_idempotency UNIQUE (org_id, idempotency_key),
            CONSTRAINT ck_jobs_status CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'))
        )""")
    op.execute("CREATE INDEX ix_jobs_org_created ON jobs (org_id, created_at DESC, id DESC)")
    op.execute("CREATE INDEX ix_jobs_active ON jobs (status, enqueued_at) WHERE status IN ('queued', 'running')")
    op.execute("CREATE INDEX ix_jobs_finished ON jobs (kind, finished_at) WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    for table in ("jobs", "memories", "agents", "users", "organizations"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
