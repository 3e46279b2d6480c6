"""Export and import archives: the bytes of an export (written by its job) or of an uploaded import.

An archive is stored in the database in chunks of about a mebibyte (`archive_chunks`), so any API or
worker process on any host reads what another wrote, and a download streams chunk by chunk. The row
knows whose it is, which job made or reads it, its manifest (exports) and when it expires; expired
archives lose their chunks (pipelines/exports/storage.py `purge_expired`) and keep their row, so a
download answers 410 rather than 404.

Revision ID: 0014
Revises: 0013
"""
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE archives (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            purpose varchar(10) NOT NULL CHECK (purpose IN ('export', 'import')),
            job_id uuid,
            size_bytes bigint NOT NULL DEFAULT 0,
            sha256 varchar(64),
            manifest jsonb,
            complete boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            purged_at timestamptz
        )""")
    op.execute("CREATE INDEX ix_archives_expires ON archives (expires_at) WHERE purged_at IS NULL")
    op.execute("CREATE INDEX ix_archives_job ON archives (job_id)")
    op.execute("""
        CREATE TABLE archive_chunks (
            archive_id uuid NOT NULL REFERENCES archives(id),
            seq integer NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (archive_id, seq)
        )""")
    # Gzip output: compressing it again costs CPU for nothing.
    op.execute("ALTER TABLE archive_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("DROP TABLE archive_chunks")
    op.execute("DROP TABLE archives")
