"""Schedules: maintenance tasks run by the scheduler on a cron expression (in a time zone) or an interval.

`org_id` NULL is a platform-wide schedule (superusers). The scheduler fires a due schedule with a
compare-and-swap on `next_run_at`, so two scheduler processes never fire it twice; `ix_schedules_due`
keeps finding the due ones cheap. `default_name` marks a default the service installed: one per
organization (or one platform-wide) and name, so installing defaults again adds only new ones.

Revision ID: 0011
Revises: 0010
"""
from alembic import op

revision = "0011"
down_revision = "0010"

NO_ORG = "'00000000-0000-0000-0000-000000000000'::uuid"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE schedules (
            id uuid PRIMARY KEY,
            org_id uuid REFERENCES organizations(id) ON DELETE CASCADE,
            name varchar(100) NOT NULL,
            name_key varchar(300) NOT NULL,
            task varchar(64) NOT NULL,
            params jsonb NOT NULL DEFAULT '{}'::jsonb,
            cron varchar(200),
            timezone varchar(64) NOT NULL DEFAULT 'UTC',
            interval_seconds integer CHECK (interval_seconds > 0),
            enabled boolean NOT NULL DEFAULT true,
            catch_up varchar(20) NOT NULL DEFAULT 'run_once' CHECK (catch_up IN ('skip', 'run_once')),
            default_name varchar(64),
            next_run_at timestamptz NOT NULL,
            last_run_at timestamptz,
            last_job_id uuid,
            created_by varchar(100),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
        )""")
    op.execute(f"CREATE UNIQUE INDEX uq_schedules_name ON schedules (coalesce(org_id, {NO_ORG}), name_key)")
    op.execute(f"CREATE UNIQUE INDEX uq_schedules_default ON schedules (coalesce(org_id, {NO_ORG}), default_name) "
               "WHERE default_name IS NOT NULL")
    op.execute("CREATE INDEX ix_schedules_due ON schedules (next_run_at) WHERE enabled")
    op.execute("CREATE INDEX ix_schedules_org ON schedules (org_id, created_at, id)")
    # `retention` deletes a finished job only once no job names it as its parent: this keeps that check cheap.
    op.execute("CREATE INDEX ix_jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX ix_jobs_parent")
    op.execute("DROP TABLE schedules")
