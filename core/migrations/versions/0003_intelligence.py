"""Memory intelligence: LLM provider configurations, memory history, token usage per job.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE llm_configs (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            name varchar(100) NOT NULL,
            provider varchar(30) NOT NULL,
            base_url varchar(500),
            chat_model varchar(200) NOT NULL,
            api_version varchar(50),
            api_key_encrypted text,
            api_key_hint varchar(20),
            max_concurrency integer NOT NULL DEFAULT 4,
            timeout_seconds double precision NOT NULL DEFAULT 60,
            max_retries integer NOT NULL DEFAULT 4,
            is_default boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("CREATE UNIQUE INDEX uq_llm_configs_name ON llm_configs (org_id, lower(name)) WHERE deleted_at IS NULL")
    # At most one default per organization.
    op.execute("CREATE UNIQUE INDEX uq_llm_configs_default ON llm_configs (org_id) "
               "WHERE is_default AND deleted_at IS NULL")
    op.execute("""
        CREATE TABLE memory_history (
            id uuid PRIMARY KEY,
            memory_id uuid NOT NULL REFERENCES memories(id),
            org_id uuid NOT NULL REFERENCES organizations(id),
            version integer NOT NULL,
            event varchar(10) NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
            old_content text,
            new_content text,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            job_id uuid,
            actor varchar(100),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_memory_history_version UNIQUE (memory_id, version)
        )""")
    op.execute("CREATE INDEX ix_memory_history_job ON memory_history (job_id) WHERE job_id IS NOT NULL")
    op.execute("ALTER TABLE jobs ADD COLUMN usage jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS usage")
    op.execute("DROP TABLE IF EXISTS memory_history")
    op.execute("DROP TABLE IF EXISTS llm_configs")
