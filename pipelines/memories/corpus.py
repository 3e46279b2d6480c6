"""What search reads: a table of an organization's texts, each with an embedding and a full-text vector.

Memories are searched by `pipelines/memories/search.py` and `pipelines/memories/fulltext.py`; a `Corpus`
names the table they run against, so conversation messages are searched by the same code
(`pipelines/conversations/search.py` defines their corpus). Each such table has `id`, `org_id`,
`deleted_at`, a pgvector `embedding` (HNSW-indexed, NULL until computed) and a generated `fts`
tsvector column (GIN-indexed; not mapped on the model, since nothing writes it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import func, literal_column, or_
from sqlalchemy.sql.elements import ColumnElement

from core.embedder import model_identity
from schemas.tables import Memory


@dataclass(frozen=True)
class Corpus:
    """A searchable table, by its model."""

    model: Any
    has_passages: bool = False  # long rows have more vectors in `memory_passages` (memories only)
    expires: bool = False  # rows may carry `expires_at`, past which they are gone (memories only)
    tracks_model: bool = False  # rows record the model of their vector in `embedding_model` (memories only)

    @property
    def name(self) -> str:
        """The table's name: what `pg_stats` files its statistics under, and what caches are keyed by."""
        return self.model.__tablename__

    @property
    def id(self) -> Any:
        return self.model.id

    @property
    def content(self) -> Any:
        return self.model.content

    @property
    def embedding(self) -> Any:
        return self.model.embedding

    @property
    def fts(self) -> ColumnElement:
        return literal_column(f"{self.name}.fts")

    def org_clauses(self, org_id: uuid.UUID) -> list[ColumnElement[bool]]:
        """The organization's live rows (not deleted, not expired)."""
        clauses = [self.model.org_id == org_id, self.model.deleted_at.is_(None)]
        if self.expires:
            clauses.append(unexpired(self.model))
        return clauses

    def embedding_column(self, prev: bool = False) -> Any:
        """The vectors: `embedding`, or with `prev` those kept aside during a switch of dimension
        (`embedding_prev`, core/embedding_columns.py), which the model does not map."""
        return prev_embedding(self.model) if prev else self.model.embedding

    def vector_clauses(self, model: str | None = None, prev: bool = False) -> list[ColumnElement[bool]]:
        """Rows whose vector a query embedded by `model` (None: the current one) can be compared with; with
        `prev`, their vector in `embedding_prev`."""
        clauses = [self.embedding_column(prev).is_not(None)]
        if self.tracks_model:
            recorded = literal_column(f"{self.name}.embedding_model_prev") if prev else self.model.embedding_model
            clauses.append(recorded == (model or model_identity()))
        return clauses


def prev_embedding(model: Any) -> ColumnElement:
    """A table's `embedding_prev` column (only there while a switch of dimension is under way)."""
    return literal_column(f"{model.__tablename__}.embedding_prev", type_=Vector())


def unexpired(model: Any) -> ColumnElement[bool]:
    """A row without `expires_at`, or whose `expires_at` is still ahead."""
    return or_(model.expires_at.is_(None), model.expires_at > func.now())


MEMORIES = Corpus(Memory, has_passages=True, expires=True, tracks_model=True)
