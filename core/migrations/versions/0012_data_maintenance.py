"""Data maintenance: which model made each vector, memories that expire, and indexes `purge` walks.

`embedding_model` records the model (`AGENTMEM_EMBEDDING_MODEL`, `@AGENTMEM_EMBEDDING_MODEL_VERSION`
when set) that computed a memory's, a passage's and a conversation message's vector: search compares
a query only with vectors of the model that embedded it, and the `reembed` maintenance task moves the
others. Existing vectors are recorded as the currently configured model's. `expires_at` (optional)
hides a memory from reads and search once past; `purge` then deletes it.

Revision ID: 0012
Revises: 0011
"""
from alembic import op
from sqlalchemy import text

from core.embedder import model_identity

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    model = model_identity()
    op.execute("ALTER TABLE memories ADD COLUMN embedding_model varchar(200), ADD COLUMN expires_at timestamptz")
    op.execute("ALTER TABLE memory_passages ADD COLUMN embedding_model varchar(200)")
    op.execute("ALTER TABLE messages ADD COLUMN embedding_model varchar(200)")
    op.get_bind().execute(text("UPDATE memories SET embedding_model = :m WHERE embedding IS NOT NULL"), {"m": model})
    op.get_bind().execute(text("UPDATE memory_passages SET embedding_model = :m"), {"m": model})
    op.get_bind().execute(text("UPDATE messages SET embedding_model = :m WHERE embedding IS NOT NULL"), {"m": model})
    # `reembed` walks an organization's live memories by id; `purge` finds what expired or was deleted long ago.
    op.execute("CREATE INDEX ix_memories_org_id_live ON memories (org_id, id) WHERE deleted_at IS NULL")
    op.execute("CREATE INDEX ix_memories_expiring ON memories (org_id, expires_at) "
               "WHERE expires_at IS NOT NULL AND deleted_at IS NULL")
    op.execute("CREATE INDEX ix_memories_deleted ON memories (org_id, deleted_at) WHERE deleted_at IS NOT NULL")


def downgrade() -> None:
    for index in ("ix_memories_deleted", "ix_memories_expiring", "ix_memories_org_id_live"):
        op.execute(f"DROP INDEX IF EXISTS {index}")
    op.execute("ALTER TABLE memory_passages DROP COLUMN embedding_model")
    op.execute("ALTER TABLE messages DROP COLUMN embedding_model")
    op.execute("ALTER TABLE memories DROP COLUMN embedding_model, DROP COLUMN expires_at")
