"""Pseudo-relevance feedback: a search refined by its own first results, on either side.

- vector (Rocchio): the mean embedding of the first pass's best hits is added to the query's, and
  the vector side searches again; a question about several things ("how many rare items do I
  have") then finds the memories that resemble what it already found, not only what resembles its
  words.
- text (RM3): the words most typical of the first pass's best hits (`fulltext.feedback_terms`) are
  added to the query's, weighted below them, and the text side searches again; a question whose
  words the answer does not use ("what did we settle on for the cache?") reaches it through the
  words of the memories around it.
"""

from __future__ import annotations

import math
import uuid
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.settings import get_settings
from pipelines.memories.corpus import Corpus
from schemas.search import Feedback, MemorySearchIn, TextFeedback


class VectorFeedback(NamedTuple):
    docs: int  # the first pass's best hits whose mean embedding refines the query
    weight: float  # the weight of that mean, added to the query's embedding
    contrast: float = 0.0  # × the mean of all the first pass's vector candidates, subtracted (Rocchio's γ)


def feedback_settings(query: MemorySearchIn) -> VectorFeedback | None:
    """The pseudo-relevance feedback this search uses, or None."""
    return feedback_for(query.mode, query.feedback)


def feedback_for(mode: str, wanted: bool | Feedback | None = None) -> VectorFeedback | None:
    """The feedback a search in `mode` uses, as asked (`wanted`), else the service's default."""
    settings = get_settings()
    if wanted is None:
        wanted = settings.search_feedback and mode == "hybrid"
    if wanted is False or mode == "text":
        return None
    asked = wanted if isinstance(wanted, Feedback) else Feedback()
    docs = asked.docs or settings.search_feedback_docs
    weight = asked.weight if asked.weight is not None else settings.search_feedback_weight
    contrast = asked.contrast if asked.contrast is not None else settings.search_feedback_contrast
    return VectorFeedback(docs, weight, contrast) if weight > 0 else None


def refine(query_vector: list[float], feedback: list[list[float]], weight: float,
           pool: list[list[float]] | None = None, contrast: float = 0.0) -> list[float]:
    """Rocchio's refinement: the query's embedding plus `weight` × (the mean of the feedback embeddings minus
    `contrast` × the mean of the `pool`'s), normalized (cosine ignores length, but it keeps scores comparable)."""
    shift = _mean(feedback)
    if pool and contrast > 0:
        shift = [f - contrast * p for f, p in zip(shift, _mean(pool), strict=True)]
    mixed = [q + weight * s for q, s in zip(query_vector, shift, strict=True)]
    norm = math.sqrt(sum(x * x for x in mixed)) or 1.0
    return [x / norm for x in mixed]


def _mean(vectors: list[list[float]]) -> list[float]:
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


async def embeddings_by_id(session: AsyncSession, corpus: Corpus, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[float]]:
    """The embeddings of these rows, by id (those that have one, of the current model)."""
    rows = await session.execute(select(corpus.id, corpus.embedding).where(corpus.id.in_(ids),
                                                                           *corpus.vector_clauses()))
    return {row_id: list(map(float, vector)) for row_id, vector in rows}


def text_feedback_for(mode: str, wanted: bool | TextFeedback | None = None) -> tuple[int, int, float] | None:
    """(docs, terms, weight) of the text feedback (RM3) a search in `mode` uses, as asked, else the service's."""
    settings = get_settings()
    if wanted is None:
        wanted = settings.search_text_feedback
    if wanted is False or mode == "vector":
        return None
    asked = wanted if isinstance(wanted, TextFeedback) else TextFeedback()
    docs = asked.docs or settings.search_text_feedback_docs
    terms = asked.terms or settings.search_text_feedback_terms
    weight = asked.weight if asked.weight is not None else settings.search_text_feedback_weight
    return (docs, terms, weight) if weight > 0 else None


def text_feedback_settings(query: MemorySearchIn) -> tuple[int, int, float] | None:
    """(docs, terms, weight) of the text feedback this search uses, or None."""
    return text_feedback_for(query.mode, query.text_feedback)
