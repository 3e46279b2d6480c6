"""Webhooks: an organization's endpoints, the log of every delivery attempt, and the outbox the events wait in.

Event sources write to `webhook_outbox` in the transaction that makes the event happen, by triggers, and only
for organizations with an enabled webhook (others pay one index probe per finished job or history statement):
- a job reaching `succeeded` or `failed` (not webhook deliveries themselves): one row naming the job;
- memory history rows (every memory write makes one): one row per statement, organization, history event and
  job, with up to 1000 memory ids, so a 100k-memory ingest gives ~100 events, not 100k.
The scheduler turns outbox rows into `webhook_delivery` jobs (pipelines/webhooks/outbox.py).

Revision ID: 0013
Revises: 0012
"""
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.execute("""
        CREATE TABLE webhooks (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            url varchar(2000) NOT NULL,
            description text NOT NULL DEFAULT '',
            event_types varchar(64)[] NOT NULL,
            secret_encrypted text NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            consecutive_failures integer NOT NULL DEFAULT 0,
            disabled_at timestamptz,
            disabled_reason text,
            last_delivery_at timestamptz,
            last_success_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("CREATE INDEX ix_webhooks_org_created ON webhooks (org_id, created_at, id)")
    op.execute("CREATE INDEX ix_webhooks_enabled ON webhooks (org_id) WHERE enabled")
    op.execute("""
        CREATE TABLE webhook_deliveries (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES organizations(id),
            webhook_id uuid NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
            job_id uuid NOT NULL,
            event_id varchar(64) NOT NULL,
            event_type varchar(64) NOT NULL,
            attempt integer NOT NULL,
            succeeded boolean NOT NULL,
            status_code integer,
            duration_ms double precision,
            error_code varchar(100),
            error_message text,
            response_excerpt text,
            created_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("CREATE INDEX ix_webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at, id)")
    op.execute("CREATE INDEX ix_webhook_deliveries_created ON webhook_deliveries (created_at)")  # retention
    op.execute("""
        CREATE TABLE webhook_outbox (
            id bigserial PRIMARY KEY,
            org_id uuid NOT NULL,
            source varchar(20) NOT NULL CHECK (source IN ('job', 'memory')),
            event_type varchar(64),
            job_id uuid,
            data jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("""
        CREATE FUNCTION webhook_outbox_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.kind <> 'webhook_delivery'
               AND EXISTS (SELECT 1 FROM webhooks w WHERE w.org_id = NEW.org_id AND w.enabled) THEN
                INSERT INTO webhook_outbox (org_id, source, job_id) VALUES (NEW.org_id, 'job', NEW.id);
            END IF;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER jobs_webhook_outbox AFTER UPDATE OF status ON jobs FOR EACH ROW
        WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION webhook_outbox_job()""")
    op.execute("""
        CREATE FUNCTION webhook_outbox_memory() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO webhook_outbox (org_id, source, event_type, job_id, data)
            SELECT c.org_id, 'memory',
                   CASE c.event WHEN 'ADD' THEN 'memory.created' WHEN 'UPDATE' THEN 'memory.updated'
                                ELSE 'memory.deleted' END,
                   c.job_id, jsonb_build_object('memory_ids', jsonb_agg(c.memory_id ORDER BY c.memory_id))
            FROM (SELECT n.org_id, n.event, n.job_id, n.memory_id,
                         (row_number() OVER (PARTITION BY n.org_id, n.event, n.job_id ORDER BY n.memory_id) - 1)
                           / 1000 AS chunk
                  FROM new_rows n
                  WHERE n.event IN ('ADD', 'UPDATE', 'DELETE')
                    AND n.org_id IN (SELECT w.org_id FROM webhooks w WHERE w.enabled)) c
            GROUP BY c.org_id, c.event, c.job_id, c.chunk;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER memory_history_webhook_outbox AFTER INSERT ON memory_history
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webhook_outbox_memory()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS memory_history_webhook_outbox ON memory_history")
    op.execute("DROP TRIGGER IF EXISTS jobs_webhook_outbox ON jobs")
    op.execute("DROP FUNCTION IF EXISTS webhook_outbox_memory()")
    op.execute("DROP FUNCTION IF EXISTS webhook_outbox_job()")
    op.execute("DROP TABLE IF EXISTS webhook_outbox")
    op.execute("DROP TABLE IF EXISTS webhook_deliveries")
    op.execute("DROP TABLE IF EXISTS webhooks")
