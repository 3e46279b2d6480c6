"""Tell API processes when an API key or its organization changes, so they may cache keys.

Each API process keeps the keys it looked up (pipelines/accounts/key_cache.py). These triggers send
`NOTIFY agentmem_auth` for every change that could refuse or limit a key, in the writing transaction,
so the notification goes out when it commits (and never for a rollback), whatever wrote the row:
- `api_keys`: revocation, expiry, role, scopes, secret, prefix or organization changed, or the row
  deleted: `key:<prefix>` (the prefix the caches know it by);
- `organizations`: limits or deletion changed, or the row deleted: `org:<id>`;
- a TRUNCATE of either: `all`.
`last_used_at`, written once a minute per key in use, does not fire them.

Revision ID: 0016
Revises: 0015
"""
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION auth_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_LEVEL = 'STATEMENT' THEN
                PERFORM pg_notify('agentmem_auth', 'all');
            ELSIF TG_TABLE_NAME = 'api_keys' THEN
                PERFORM pg_notify('agentmem_auth', 'key:' || OLD.prefix);
            ELSE
                PERFORM pg_notify('agentmem_auth', 'org:' || OLD.id::text);
            END IF;
            RETURN NULL;
        END $$""")
    op.execute("CREATE TRIGGER api_keys_auth_notify AFTER UPDATE OF revoked_at, expires_at, role, scopes, "
               "secret_hash, prefix, org_id OR DELETE ON api_keys FOR EACH ROW EXECUTE FUNCTION auth_notify()")
    op.execute("CREATE TRIGGER organizations_auth_notify AFTER UPDATE OF limits, deleted_at OR DELETE "
               "ON organizations FOR EACH ROW EXECUTE FUNCTION auth_notify()")
    for table in ("api_keys", "organizations"):
        op.execute(f"CREATE TRIGGER {table}_auth_notify_truncate AFTER TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION auth_notify()")


def downgrade() -> None:
    for table in ("api_keys", "organizations"):
        op.execute(f"DROP TRIGGER {table}_auth_notify_truncate ON {table}")
        op.execute(f"DROP TRIGGER {table}_auth_notify ON {table}")
    op.execute("DROP FUNCTION auth_notify()")
