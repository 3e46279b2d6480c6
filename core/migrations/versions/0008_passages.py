"""Passages: the later passages of long memories, each with its embedding, so search can find a fact
past the embedding model's window (pipelines/memories/passages.py).

Memories stored before this migration have no passages; they are searched by their one embedding,
as before, until re-embedded.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

from core.settings import get_settings

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    dim = get_settings().embedding_dim
    op.execute(f"""
        CREATE TABLE memory_passages (
            memory_id uuid NOT NULL REFERENCES memories(id),
            ord smallint NOT NULL,
            org_id uuid NOT NULL REFERENCES organizations(id),
            content_hash varchar(64) NOT NULL,
            embedding vector({dim}) NOT NULL,
            PRIMARY KEY (memory_id, ord)
        )""")
    op.execute("CREATE INDEX ix_memory_passages_embedding ON memory_passages USING hnsw (embedding vector_cosine_ops)")


def downgrade() -> None:
    op.execute("DROP TABLE memory_passages")
