"""Sources: uploaded documents whose text becomes memories (pipelines/sources/).

A source's memories are those its `ingest_source` job stored (`memories.source_job_id = sources.job_id`).
Identical bytes uploaded again to the same organization and scope find the live source already there:
the partial unique index makes that one row even under concurrent uploads. The bytes live in
`source_blobs`, apart, so lists never read them, and are dropped when the source is deleted.

Revision ID: 0010
Revises: 0008
"""
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE sources (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            user_id varchar(255),
            agent_id varchar(255),
            run_id varchar(255),
            filename varchar(255) NOT NULL,
            media_type varchar(100) NOT NULL,
            size_bytes bigint NOT NULL,
            sha256 varchar(64) NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            chunk_size integer NOT NULL,
            chunk_overlap integer NOT NULL,
            status varchar(20) NOT NULL
                CHECK (status IN ('queued', 'processing', 'ready', 'failed', 'cancelled')),
            chunks integer,
            pages integer,
            error_code varchar(100),
            error_message text,
            job_id uuid,
            actor varchar(100),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz
        )""")
    op.execute("CREATE INDEX ix_sources_org_created ON sources (org_id, created_at DESC, id DESC) "
               "WHERE deleted_at IS NULL")
    op.execute("CREATE UNIQUE INDEX uq_sources_live_bytes ON sources (org_id, sha256, coalesce(user_id, ''), "
               "coalesce(agent_id, ''), coalesce(run_id, '')) WHERE deleted_at IS NULL")
    op.execute("""
        CREATE TABLE source_blobs (
            source_id uuid PRIMARY KEY REFERENCES sources(id),
            content bytea NOT NULL
        )""")
    # The bytes are compressed already (PDF, DOCX) or small next to them: don't spend CPU compressing again.
    op.execute("ALTER TABLE source_blobs ALTER COLUMN content SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("DROP TABLE source_blobs")
    op.execute("DROP TABLE sources")
