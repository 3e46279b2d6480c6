"""Each organization's count of live memories, kept by triggers, so a quota check does not count rows.

Every request that stores memories checks the organization's `max_memories` quota under its quota lock.
It counted the organization's live memories each time: an index scan that grows with the organization
(tens of milliseconds at a million memories) and that serialized every writer of the organization behind
it. `memory_counts` holds the count instead, split into 16 stripes per organization so that concurrent
writers seldom wait on each other's row: the count is the sum of the organization's stripes.

Triggers keep it exact in every path that writes memories (ingest, extraction, documents, imports,
deletes, purges), inside the writing transaction, so it commits or rolls back with the rows:
- an INSERT or DELETE statement adds or subtracts its live rows once per statement (transition tables);
- an UPDATE that sets or clears `deleted_at` (a delete, a restore) counts per row. Other updates
  (embeddings, metadata) do not fire it.

The table is filled from the rows in the same transaction that creates the triggers (which locks out
writers meanwhile), so no write is missed or counted twice.

Revision ID: 0015
Revises: 0014
"""
from alembic import op

revision = "0015"
down_revision = "0014"

STRIPES = 16


def upgrade() -> None:
    op.execute("""
        CREATE TABLE memory_counts (
            org_id uuid NOT NULL,
            stripe smallint NOT NULL,
            live bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (org_id, stripe)
        )""")
    # The stripe is the writing connection's: two connections writing at once mostly touch different rows.
    op.execute(f"""
        CREATE FUNCTION memory_counts_add(org uuid, delta bigint) RETURNS void LANGUAGE sql AS $$
            INSERT INTO memory_counts (org_id, stripe, live) VALUES (org, pg_backend_pid() % {STRIPES}, delta)
            ON CONFLICT (org_id, stripe) DO UPDATE SET live = memory_counts.live + EXCLUDED.live
        $$""")
    op.execute(f"""
        CREATE FUNCTION memory_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO memory_counts (org_id, stripe, live)
            SELECT org_id, pg_backend_pid() % {STRIPES}, count(*) FROM inserted_rows
            WHERE deleted_at IS NULL GROUP BY org_id
            ON CONFLICT (org_id, stripe) DO UPDATE SET live = memory_counts.live + EXCLUDED.live;
            RETURN NULL;
        END $$""")
    op.execute(f"""
        CREATE FUNCTION memory_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO memory_counts (org_id, stripe, live)
            SELECT org_id, pg_backend_pid() % {STRIPES}, -count(*) FROM deleted_rows
            WHERE deleted_at IS NULL GROUP BY org_id
            ON CONFLICT (org_id, stripe) DO UPDATE SET live = memory_counts.live + EXCLUDED.live;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE FUNCTION memory_counts_soft_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM memory_counts_add(NEW.org_id, CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE -1 END);
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER memory_counts_insert AFTER INSERT ON memories REFERENCING NEW TABLE AS inserted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memory_counts_inserted()""")
    op.execute("""
        CREATE TRIGGER memory_counts_delete AFTER DELETE ON memories REFERENCING OLD TABLE AS deleted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION memory_counts_deleted()""")
    op.execute("""
        CREATE TRIGGER memory_counts_soft_delete AFTER UPDATE OF deleted_at ON memories FOR EACH ROW
        WHEN ((OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL)) EXECUTE FUNCTION memory_counts_soft_deleted()""")
    # After the triggers (CREATE TRIGGER holds off writers until this transaction commits): nothing is missed.
    op.execute("""
        INSERT INTO memory_counts (org_id, stripe, live)
        SELECT org_id, 0, count(*) FROM memories WHERE deleted_at IS NULL GROUP BY org_id""")


def downgrade() -> None:
    op.execute("DROP TRIGGER memory_counts_soft_delete ON memories")
    op.execute("DROP TRIGGER memory_counts_delete ON memories")
    op.execute("DROP TRIGGER memory_counts_insert ON memories")
    op.execute("DROP FUNCTION memory_counts_soft_deleted()")
    op.execute("DROP FUNCTION memory_counts_deleted()")
    op.execute("DROP FUNCTION memory_counts_inserted()")
    op.execute("DROP FUNCTION memory_counts_add(uuid, bigint)")
    op.execute("DROP TABLE memory_counts")
