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

import uuid
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import func, null, select
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


def refine(query_vector: list[float], feedback: list[Any], weight: float, pool: list[Any] | None = None,
           contrast: float = 0.0) -> list[float]:
    """Rocchio's refinement: the query's embedding plus `weight` × (the mean of the feedback embeddings minus
    `contrast` × the mean of the `pool`'s), normalized (cosine ignores length, but it keeps scores comparable)."""
    return refine_by_means(query_vector, np.mean(np.asarray(feedback, dtype=np.float64), axis=0), weight,
                           np.mean(np.asarray(pool, dtype=np.float64), axis=0) if pool else None, contrast)


def refine_by_means(query_vector: list[float], best_mean: Any, weight: float, pool_mean: Any | None = None,
                    contrast: float = 0.0) -> list[float]:
    """`refine`, given the two means (as `feedback_means` has PostgreSQL compute them)."""
    shift = np.asarray(best_mean, dtype=np.float64)
    if pool_mean is not None and contrast > 0:
        shift = shift - contrast * np.asarray(pool_mean, dtype=np.float64)
    mixed = np.asarray(query_vector, dtype=np.float64) + weight * shift
    norm = float(np.linalg.norm(mixed)) or 1.0
    return (mixed / norm).tolist()


async def feedback_means(session: AsyncSession, corpus: Corpus, best: list[uuid.UUID], pool: list[uuid.UUID]
                         ) -> tuple[Any, Any] | None:
    """The mean embedding of the `best` rows and of the `pool`'s (None without a pool), those of the current
    model, averaged in PostgreSQL (two vectors come back, not fifty); None if no best row has one."""
    vector_type = corpus.embedding.type
    best_mean = func.avg(corpus.embedding, type_=vector_type).filter(corpus.id.in_(best))
    pool_mean = func.avg(corpus.embedding, type_=vector_type).filter(corpus.id.in_(pool)) if pool else null()
    row = (await session.execute(select(best_mean, pool_mean).where(corpus.id.in_(list({*best, *pool})),
                                                                      *corpus.vector_clauses()))).one()
    return None if row[0] is None else (row[0], row[1])


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
