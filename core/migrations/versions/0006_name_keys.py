"""Names compared by how they look: organizations and LLM configs get a `name_key` (schemas.inputs.name_key:
NFKC, look-alike letters as Latin, no accents, case-folded), unique among live rows, in place of lower(name).

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

from schemas.inputs import name_key

revision = "0006"
down_revision = "0005"


def _backfill(table: str, scope: str | None) -> None:
    """Key every row; among live rows a key already taken (look-alikes made before this check) gets the
    row's id appended, so nothing is renamed and the unique index can be built."""
    connection = op.get_bind()
    columns = f"id, name, deleted_at IS NULL AS live{', ' + scope if scope else ''}"
    rows = connection.execute(sa.text(f"SELECT {columns} FROM {table} ORDER BY created_at, id")).mappings().all()
    taken: set[tuple] = set()
    for row in rows:
        key = name_key(row["name"])
        slot = (row[scope] if scope else None, key)
        if row["live"]:
            if slot in taken:
                key = f"{key}#{row['id']}"
            taken.add(slot)
        connection.execute(sa.text(f"UPDATE {table} SET name_key = :key WHERE id = :id"), {"key": key, "id": row["id"]})


def upgrade() -> None:
    op.execute("ALTER TABLE organizations ADD COLUMN name_key varchar(300)")
    op.execute("ALTER TABLE llm_configs ADD COLUMN name_key varchar(300)")
    _backfill("organizations", None)
    _backfill("llm_configs", "org_id")
    op.execute("ALTER TABLE organizations ALTER COLUMN name_key SET NOT NULL")
    op.execute("ALTER TABLE llm_configs ALTER COLUMN name_key SET NOT NULL")
    op.execute("DROP INDEX IF EXISTS uq_organizations_name")
    op.execute("DROP INDEX IF EXISTS uq_llm_configs_name")
    op.execute("CREATE UNIQUE INDEX uq_organizations_name_key ON organizations (name_key) WHERE deleted_at IS NULL")
    op.execute("CREATE UNIQUE INDEX uq_llm_configs_name_key ON llm_configs (org_id, name_key) "
               "WHERE deleted_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS uq_llm_configs_name_key")
    op.execute("DROP INDEX IF EXISTS uq_organizations_name_key")
    op.execute("CREATE UNIQUE INDEX uq_organizations_name ON organizations (lower(name)) WHERE deleted_at IS NULL")
    op.execute("CREATE UNIQUE INDEX uq_llm_configs_name ON llm_configs (org_id, lower(name)) WHERE deleted_at IS NULL")
    op.execute("ALTER TABLE llm_configs DROP COLUMN name_key")
    op.execute("ALTER TABLE organizations DROP COLUMN name_key")
