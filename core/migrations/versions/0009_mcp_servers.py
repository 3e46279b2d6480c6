"""MCP servers: an organization's stdio commands and streamable-HTTP URLs that AgentMem calls as a client,
with their cached tool lists. Env values and headers are stored encrypted (core/crypto.py).

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE mcp_servers (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            name varchar(40) NOT NULL,
            description text NOT NULL DEFAULT '',
            transport varchar(20) NOT NULL CHECK (transport IN ('stdio', 'streamable_http')),
            command varchar(500),
            args jsonb NOT NULL DEFAULT '[]'::jsonb,
            env_encrypted text,
            env_keys varchar(100)[] NOT NULL DEFAULT '{}',
            url varchar(2000),
            headers_encrypted text,
            header_names varchar(100)[] NOT NULL DEFAULT '{}',
            network boolean NOT NULL DEFAULT false,
            timeout_seconds double precision,
            version integer NOT NULL DEFAULT 1,
            server_info jsonb,
            tools jsonb,
            tools_refreshed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            CHECK ((transport = 'stdio') = (command IS NOT NULL)),
            CHECK ((transport = 'streamable_http') = (url IS NOT NULL))
        )""")
    # A model calls MCP tools as mcp__<server>__<tool>: names are unique among an organization's live servers.
    op.execute("CREATE UNIQUE INDEX uq_mcp_servers_name ON mcp_servers (org_id, lower(name)) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_mcp_servers_refresh ON mcp_servers (tools_refreshed_at) WHERE deleted_at IS NULL")
    op.execute("ALTER TABLE agents ADD COLUMN mcp_server_ids uuid[] NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    op.execute("ALTER TABLE agents DROP COLUMN IF EXISTS mcp_server_ids")
    op.execute("DROP TABLE IF EXISTS mcp_servers")
