"""Keep vectors in the row, not in the TOAST table.

pgvector's type is stored EXTERNAL by default, and PostgreSQL moves a row's largest values out of line once the
row passes about 2 KB. A 384-dimension vector is 1.5 KB, so a short memory's row (the vector, a paragraph and
its `fts`) passed it and lost the vector to the TOAST table (1,138 of 2,000 seeded memories); passages and
messages are rows of the same shape. Every read of such a vector (an exact scan of a user's scope, the
feedback pass's mean, the distances of the rows an HNSW scan returns) went through the TOAST index and a
second heap, and every insert wrote there too. An exact scan of 2,000 memories read 3,740 buffers for 569
heap pages and took 3.8–4.1 ms; with the vectors in the row, 569 buffers and 2.1–2.3 ms.

Vectors become MAIN (moved out only as a last resort), and rows stay whole up to 4 KB (`toast_tuple_target`):
a longer memory's text and `fts` go out of line first, as they did. Only rows written from now on are laid
out this way; older rows keep their out-of-line vectors until rewritten (`VACUUM FULL` rewrites a table).
Both are catalog changes: no row is rewritten here.

Revision ID: 0017
Revises: 0016
"""
from alembic import op
from sqlalchemy import text

revision = "0017"
down_revision = "0016"

TABLES = ("memories", "memory_passages", "messages")
ROW_TARGET = 4080  # bytes: half a page, so two rows of a vector and a paragraph share one


def _vector_columns(table: str) -> list[str]:
    """The table's vector columns: `embedding`, and `embedding_prev` while a switch of models is under way."""
    rows = op.get_bind().execute(text(
        "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 "
        "AND NOT attisdropped AND atttypid = CAST('vector' AS regtype) ORDER BY attnum"), {"table": table})
    return [row[0] for row in rows]


def upgrade() -> None:
    for table in TABLES:
        for column in _vector_columns(table):
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE MAIN")
        op.execute(f"ALTER TABLE {table} SET (toast_tuple_target = {ROW_TARGET})")


def downgrade() -> None:
    for table in TABLES:
        for column in _vector_columns(table):
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL")
        op.execute(f"ALTER TABLE {table} RESET (toast_tuple_target)")
