"""Tools: a registry per organization, executed as sandboxed jobs.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE tools (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            name varchar(100) NOT NULL,
            description text NOT NULL DEFAULT '',
            json_schema jsonb NOT NULL DEFAULT '{}'::jsonb,
            language varchar(20) NOT NULL CHECK (language IN ('python', 'bash', 'javascript')),
            source text NOT NULL,
            tags varchar(50)[] NOT NULL DEFAULT '{}',
            timeout_seconds double precision,
            limits jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    # Names are unique among an organization's live tools, whatever their case (a model calls them by name).
    op.execute("CREATE UNIQUE INDEX uq_tools_name ON tools (org_id, lower(name)) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_tools_org_created ON tools (org_id, created_at, id) WHERE deleted_at IS NULL")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS tools")
