"""Core-memory blocks: agents grow templates, blocks with versions, attachments.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute("""
        ALTER TABLE agents
            ADD COLUMN system text NOT NULL DEFAULT '',
            ADD COLUMN prompt_template text,
            ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()""")
    op.execute("CREATE INDEX ix_agents_org_created ON agents (org_id, created_at, id) WHERE deleted_at IS NULL")
    op.execute("""
        CREATE TABLE blocks (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            label varchar(100) NOT NULL,
            value text NOT NULL DEFAULT '',
            char_limit integer NOT NULL CHECK (char_limit > 0),
            description text,
            read_only boolean NOT NULL DEFAULT false,
            user_id varchar(255),
            rewrite_strategy varchar(30) NOT NULL DEFAULT 'auto',
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            version integer NOT NULL DEFAULT 1,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            -- The hard limit is the database's rule too: no writer can store more than the block holds.
            CONSTRAINT ck_blocks_value_within_limit CHECK (char_length(value) <= char_limit)
        )""")
    op.execute("CREATE INDEX ix_blocks_org_created ON blocks (org_id, created_at, id) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_blocks_org_user ON blocks (org_id, user_id) WHERE deleted_at IS NULL")
    op.execute("""
        CREATE TABLE block_versions (
            id uuid PRIMARY KEY,
            block_id uuid NOT NULL REFERENCES blocks(id),
            org_id uuid NOT NULL REFERENCES organizations(id),
            version integer NOT NULL,
            reason varchar(20) NOT NULL CHECK (reason IN ('create', 'update', 'revert', 'rewrite', 'delete')),
            label varchar(100) NOT NULL,
            value text NOT NULL,
            char_limit integer NOT NULL,
            description text,
            read_only boolean NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            actor varchar(100),
            job_id uuid,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_block_versions_version UNIQUE (block_id, version)
        )""")
    op.execute("CREATE INDEX ix_block_versions_job ON block_versions (job_id) WHERE job_id IS NOT NULL")
    op.execute("""
        CREATE TABLE agent_blocks (
            agent_id uuid NOT NULL REFERENCES agents(id),
            block_id uuid NOT NULL REFERENCES blocks(id),
            org_id uuid NOT NULL REFERENCES organizations(id),
            -- The block's label, kept in step with it, so a label is unique among an agent's blocks.
            label varchar(100) NOT NULL,
            -- Order of the blocks in the agent's prompt: attachment order.
            position integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (agent_id, block_id),
            CONSTRAINT uq_agent_blocks_label UNIQUE (agent_id, label)
        )""")
    op.execute("CREATE INDEX ix_agent_blocks_block ON agent_blocks (block_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS agent_blocks")
    op.execute("DROP TABLE IF EXISTS block_versions")
    op.execute("DROP TABLE IF EXISTS blocks")
    op.execute("DROP INDEX IF EXISTS ix_agents_org_created")
    op.execute("ALTER TABLE agents DROP COLUMN IF EXISTS updated_at, DROP COLUMN IF EXISTS metadata, "
               "DROP COLUMN IF EXISTS prompt_template, DROP COLUMN IF EXISTS system")
