"""Tenancy: accounts, memberships with roles, API keys, audit logs, per-organization limits.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    # Names are unique among live organizations only: a deleted one frees its name.
    op.execute("ALTER TABLE organizations DROP CONSTRAINT IF EXISTS organizations_name_key")
    op.execute("CREATE UNIQUE INDEX uq_organizations_name ON organizations (lower(name)) WHERE deleted_at IS NULL")
    op.execute("ALTER TABLE organizations ADD COLUMN limits jsonb NOT NULL DEFAULT '{}'::jsonb")
    op.execute("ALTER TABLE organizations ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()")

    # The spine's users table was a placeholder (nothing wrote to it); accounts are global and join
    # organizations through memberships.
    op.execute("DROP TABLE users")
    op.execute("""
        CREATE TABLE users (
            id uuid PRIMARY KEY,
            username varchar(100) NOT NULL,
            email varchar(320),
            full_name varchar(200),
            password_hash varchar(255) NOT NULL,
            is_active boolean NOT NULL DEFAULT true,
            is_superuser boolean NOT NULL DEFAULT false,
            password_changed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("CREATE UNIQUE INDEX uq_users_username ON users (lower(username)) WHERE deleted_at IS NULL")
    op.execute("CREATE UNIQUE INDEX uq_users_email ON users (lower(email)) WHERE deleted_at IS NULL")
    op.execute("""
        CREATE TABLE memberships (
            org_id uuid NOT NULL REFERENCES organizations(id),
            user_id uuid NOT NULL REFERENCES users(id),
            role varchar(20) NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (org_id, user_id)
        )""")
    op.execute("CREATE INDEX ix_memberships_user ON memberships (user_id)")
    op.execute("""
        CREATE TABLE api_keys (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            name varchar(200) NOT NULL,
            prefix varchar(32) NOT NULL UNIQUE,
            secret_hash varchar(128) NOT NULL,
            role varchar(20) NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
            scopes varchar(50)[],
            created_by varchar(100),
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            expires_at timestamptz,
            revoked_at timestamptz
        )""")
    op.execute("CREATE INDEX ix_api_keys_org ON api_keys (org_id, created_at DESC)")
    op.execute("""
        CREATE TABLE audit_logs (
            id uuid PRIMARY KEY,
            org_id uuid,
            actor varchar(100) NOT NULL,
            action varchar(100) NOT NULL,
            target_type varchar(50),
            target_id varchar(100),
            result varchar(20) NOT NULL,
            status_code integer,
            request_id varchar(64),
            ip varchar(64),
            details jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("CREATE INDEX ix_audit_logs_org_created ON audit_logs (org_id, created_at DESC, id DESC)")
    op.execute("ALTER TABLE jobs ADD COLUMN actor varchar(100)")
    # Quotas count an organization's active jobs on every submission.
    op.execute("CREATE INDEX ix_jobs_org_active ON jobs (org_id) WHERE status IN ('queued', 'running')")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobs_org_active")
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS actor")
    for table in ("audit_logs", "api_keys", "memberships"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
