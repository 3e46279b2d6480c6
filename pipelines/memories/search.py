"""Search memories: vector similarity, full-text (BM25), or both fused.

- vector: the query's embedding against pgvector's HNSW index (cosine), filters applied during
  the scan (iterative scan) so a narrow scope still fills the page; a small scope is scanned
  exactly instead, which is both faster and exact.
- text: BM25 over PostgreSQL full-text search (`pipelines/memories/fulltext.py`): words matched through
  the GIN index, ranked with inverse document frequency, because `ts_rank` has none and lets
  common words dominate.
- hybrid: each side's candidates are scored on their own, then fused: by default a convex mix of
  the two scores standardized within their lists (`fuse_scores`), or weighted reciprocal ranks
  (`fusion: rrf`, `fuse_ranks`).
- feedback (on by default in hybrid, on request in vector): pseudo-relevance feedback, Rocchio's
  way. The mean embedding of the first pass's best hits is added to the query's, and the vector
  side searches again; a question about several things ("how many rare items do I have") then
  finds the memories that resemble what it already found, not only what resembles its words.
Every hit carries both scores and ranks, so a caller can see why it was found.

The pipeline (`rank`) reads any `Corpus` (`pipelines/memories/corpus.py`): conversation search
(`pipelines/conversations/search.py`) runs it over messages.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from core import embedding_columns, timing
from core.embedder import get_embedder, get_previous_embedder
from core.errors import InvalidInput
from core.settings import get_settings
from pipelines.memories import fulltext, recency
from pipelines.memories.corpus import MEMORIES, Corpus
from pipelines.memories.feedback import (
    VectorFeedback,
    feedback_means,
    feedback_settings,
    refine_by_means,
    text_feedback_settings,
)
from pipelines.memories.filters import narrowing_clauses, org_clauses
from pipelines.memories.fusion import Hit, fuse
from pipelines.memories.passages import passage_statement
from schemas.search import MemorySearchIn

MAX_CANDIDATES = 1000


def _fingerprint(query: MemorySearchIn) -> str:
    body = query.model_dump(mode="json", exclude={"cursor"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _encode_cursor(query: MemorySearchIn, offset: int) -> str:
    raw = json.dumps([_fingerprint(query), offset]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(query: MemorySearchIn) -> int:
    if query.cursor is None:
        return 0
    try:
        fingerprint, offset = json.loads(base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4)))
        valid = fingerprint == _fingerprint(query) and isinstance(offset, int) and 0 < offset <= MAX_CANDIDATES
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidInput("cursor is not one this API issued for this same search", code="invalid_cursor")
    return offset


async def vector_neighbours(session: AsyncSession, vector: list[float], clauses: list, limit: int,
                            n_scope: int | None = None, *, corpus: Corpus = MEMORIES,
                            passages: bool = False, previous: list[float] | None = None) -> list[Hit]:
    """The corpus's rows (memories by default) within `clauses` nearest to an embedding already computed
    (cosine), best first. With `passages`, a long memory scores its best vector, its own or a passage's.
    `previous`: the query embedded by the previous model too (a switch of models under way), compared with
    the vectors that model made."""
    best: dict = {}
    queries = [(vector, None, False)]
    if get_settings().embedding_previous_model:  # a switch of models: perhaps of dimension
        queries = await _switch_queries(session, corpus, vector, previous if corpus.tracks_model else None)
    for query, model, prev in queries:
        rows = (await session.execute(await vector_statement(session, query, clauses, limit, n_scope,
                                                             corpus=corpus, model=model, prev=prev))).all()
        for row_id, d in rows:
            best[row_id] = max(best.get(row_id, -1.0), 1.0 - float(d))
        if passages and corpus.has_passages:
            settings = get_settings()
            exact = n_scope is not None and n_scope <= settings.search_exact_max
            # A memory with many passages has many chances to come close to a query by accident: a passage
            # counts by how far it beats `search_passage_margin`, so short memories are not crowded out.
            margin = settings.search_passage_margin
            for row_id, d in await session.execute(passage_statement(query, clauses, limit, exact, model, prev)):
                best[row_id] = max(best.get(row_id, -1.0), 1.0 - float(d) - margin)
    # relaxed_order may return rows slightly out of order: sort them exactly.
    ranked = sorted(best.items(), key=lambda r: -r[1])[:limit]
    return [Hit(row_id, vector_score=s, vector_rank=i + 1, similarity=s) for i, (row_id, s) in enumerate(ranked)]


async def _similarities(session: AsyncSession, corpus: Corpus, vector: list[float], hits: list[Hit]) -> None:
    """Set each hit's `similarity`, its cosine to the query as asked: the first pass knew most of them; the
    rest (found only by the refined query) are read in one statement."""
    missing = [h.id for h in hits if h.similarity is None]
    if not missing:
        return
    rows = await session.execute(select(corpus.id, corpus.embedding.cosine_distance(vector))
                                 .where(corpus.id.in_(missing), corpus.embedding.is_not(None)))
    by_id = {row_id: 1.0 - float(d) for row_id, d in rows}
    for hit in hits:
        if hit.similarity is None:
            hit.similarity = by_id.get(hit.id)


async def _switch_queries(session: AsyncSession, corpus: Corpus, vector: list[float],
                          previous: list[float] | None) -> list[tuple[list[float], str | None, bool]]:
    """What a query embedded by both models (a switch of models under way) is compared with: each vector with
    the column of its dimension. During a switch of dimension the old model's vectors are in `embedding_prev`
    (core/embedding_columns.py); the column state is read under the table's share lock, so it holds for
    this transaction."""
    state = await embedding_columns.column_state(session, corpus.name)
    queries: list[tuple[list[float], str | None, bool]] = []
    if len(vector) == state.dim:
        queries.append((vector, None, False))
    old = get_settings().embedding_previous_model
    if previous is None:
        return queries
    if state.switching and len(previous) == state.prev_dim:
        queries.append((previous, old, True))
    elif len(previous) == state.dim:
        queries.append((previous, old, False))
    return queries


async def vector_statement(session: AsyncSession, vector: list[float], clauses: list, limit: int,
                           n_scope: int | None, *, corpus: Corpus = MEMORIES, model: str | None = None,
                           prev: bool = False) -> Select:
    """The nearest-neighbour statement, with the session set up for it (HNSW iterative scan).

    A scope known to be small (`n_scope` rows, at most `search_exact_max`) is scanned exactly: the
    HNSW graph would have to be walked past every other scope's rows to fill the page. Only rows embedded
    by `model` (None: the current one) are compared; with `prev`, their vectors kept aside during a switch of
    dimension.
    """
    distance = corpus.embedding_column(prev).cosine_distance(vector)
    if n_scope is not None and n_scope <= get_settings().search_exact_max:
        # `+ 0` keeps the planner off the HNSW index: it reads the scope through its b-tree instead.
        order = distance + 0
    else:
        await prepare_hnsw(session, limit)
        order = distance
    return (select(corpus.id, distance.label("d")).where(*clauses, *corpus.vector_clauses(model, prev))
            .order_by(order).limit(limit))


async def prepare_hnsw(session: AsyncSession, limit: int) -> None:
    """Set up the transaction for an HNSW scan of `limit` rows: iterative scan, ef_search ≥ limit.

    Both settings in one round trip, for this transaction only, and once per transaction: a search
    sets them while its query is still being embedded, and its feedback pass reuses them.
    """
    ef = max(40, min(1000, limit))
    done = session.info.get("hnsw_scan")
    if done is not None and done[0] is session.get_transaction() and done[1] >= ef:
        return
    await session.execute(text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                               "set_config('hnsw.ef_search', :ef, true)"), {"ef": str(ef)})
    session.info["hnsw_scan"] = (session.get_transaction(), ef)


async def text_candidates(session: AsyncSession, text_query: str, clauses: list, limit: int,
                          n_scope: int, *, corpus: Corpus = MEMORIES) -> list[Hit]:
    """The corpus's rows (memories by default) sharing a word with the query, ranked by BM25 within the
    search's filters."""
    ranked = await fulltext.bm25_ranking(session, text_query, clauses, limit, n_scope, corpus=corpus)
    return [Hit(row_id, text_score=s, text_rank=i + 1) for i, (row_id, s) in enumerate(ranked)]


async def _embed_query(query: str) -> list[float]:
    """The query's embedding; its time (it runs alongside the database work) is reported as `embed`."""
    with timing.stage("embed"):
        [vector] = await get_embedder().embed([query], urgent=True)
    return vector


async def _given(vector: list[float]) -> list[float]:
    return vector


async def _embed_previous(embedder, query: str) -> list[float]:
    """The query's embedding by the previous model, while a switch of models is under way."""
    with timing.stage("embed"):
        [vector] = await embedder.embed([query], urgent=True)
    return vector


Fusing = Callable[[list[Hit], list[Hit]], list[Hit]]


@dataclass
class Plan:
    """What a search does beyond its mode: feedback on either side, and passages."""

    feedback: VectorFeedback | None = None  # vector side (Rocchio): docs, weight, contrast
    text_feedback: tuple[int, int, float] | None = None  # text side (RM3): docs, terms, weight
    passages: bool = False  # a long memory scores its best passage
    similarity: bool = False  # every vector candidate's cosine to the query as asked, refined or not


async def _meaning_side(session: AsyncSession, corpus: Corpus, mode: str, embedding: asyncio.Future,
                        textual: list[Hit], clauses: list, depth: int, n_scope: int, fusing: Fusing,
                        plan: Plan, previous: asyncio.Future | None = None) -> tuple[list[Hit], bool]:
    """The vector candidates, and whether feedback refined the query they were found with."""
    with timing.stage("embed_wait"):
        query_vector = await embedding
        previous_vector = await previous if previous is not None else None
    with timing.stage("vector"):
        vector = await vector_neighbours(session, query_vector, clauses, depth, n_scope, corpus=corpus,
                                         passages=plan.passages, previous=previous_vector)
    if plan.feedback is None or not vector:
        return vector, False
    # The first pass's best hits (fused, in hybrid) pull the query towards what it found.
    with timing.stage("feedback"):
        docs, weight, contrast = plan.feedback
        first = fusing(vector, textual) if mode == "hybrid" else vector
        pool = [h.id for h in vector] if contrast > 0 else []
        means = await feedback_means(session, corpus, [h.id for h in first[:docs]], pool)
        if means is None or len(means[0]) != len(query_vector):  # a switch of dimension not yet begun
            return vector, False
        refined = refine_by_means(query_vector, means[0], weight, means[1], contrast)
        second = await vector_neighbours(session, refined, clauses, depth, n_scope, corpus=corpus,
                                         passages=plan.passages, previous=previous_vector)
        asked = {h.id: h.similarity for h in vector}
        for hit in second:
            hit.similarity = asked.get(hit.id)
        if plan.similarity:
            await _similarities(session, corpus, query_vector, second)
        return second, True


async def _expanded_text_side(session: AsyncSession, corpus: Corpus, text_query: str, first: list[Hit],
                              clauses: list, depth: int, n_scope: int, plan: Plan) -> list[Hit] | None:
    """The text candidates again, for the query's words and RM3's (None: no words to add)."""
    assert plan.text_feedback is not None
    docs, terms, weight = plan.text_feedback
    with timing.stage("text_feedback"):
        # Each feedback hit weighs by its rank (1/rank): fused and BM25 scores have no common scale.
        extra = await fulltext.feedback_terms(session, text_query, [(h.id, 1.0 / (i + 1)) for i, h in
                                                                    enumerate(first[:docs])], terms, corpus=corpus)
        if not extra:
            return None
        ranked = await fulltext.bm25_ranking(session, text_query, clauses, depth, n_scope, corpus=corpus,
                                             extra={t: weight * w for t, w in extra.items()})
    return [Hit(row_id, text_score=s, text_rank=i + 1) for i, (row_id, s) in enumerate(ranked)]


async def rank(session: AsyncSession, corpus: Corpus, org_id: uuid.UUID, text_query: str, mode: str,
               clauses: list, *, whole_org: bool, depth: int, fusing: Fusing = fuse,
               plan: Plan | None = None, query_vector: list[float] | None = None) -> tuple[list[Hit], bool]:
    """The corpus's rows within `clauses` (which hold `corpus.org_clauses`) ranked for the query in `mode`,
    up to `depth` per side, best first; and whether feedback refined the query. `whole_org`: the clauses
    narrow the organization's live rows little or not at all, so its size can stand for the scope's.
    `query_vector`: the query's embedding, if the caller has it already."""
    settings = get_settings()
    plan = plan or Plan()
    # The query's embedding is computed on the model thread while the database sizes the scope and
    # ranks by text; the vector side then waits for it.
    embedding = previous = None
    if mode != "text":
        embedding = asyncio.ensure_future(_embed_query(text_query) if query_vector is None
                                          else _given(query_vector))
        if corpus.tracks_model and (embedder := get_previous_embedder()) is not None:
            previous = asyncio.ensure_future(_embed_previous(embedder, text_query))
    try:
        # One count serves both sides: exact or HNSW vector search; the text side's budget and IDF. The
        # vector side alone only needs to know whether the scope is small.
        with timing.stage("scope"):
            if mode == "vector":
                n_scope, _ = await fulltext.scope_size(session, org_id, clauses, settings.search_exact_max,
                                                       estimate=False, whole_org=whole_org, corpus=corpus)
            else:
                n_scope, _ = await fulltext.scope_size(session, org_id, clauses, settings.search_scope_count_max,
                                                       whole_org=whole_org, corpus=corpus)
        if embedding is not None and n_scope > settings.search_exact_max:
            # While the query is embedded: the connection, its transaction and the scan settings.
            with timing.stage("vector"):
                await prepare_hnsw(session, depth)
        textual = []
        if mode != "vector":
            with timing.stage("text"):
                textual = await text_candidates(session, text_query, clauses, depth, n_scope, corpus=corpus)
        vector, refined = [], False
        if embedding is not None:
            vector, refined = await _meaning_side(session, corpus, mode, embedding, textual, clauses, depth, n_scope,
                                                  fusing, plan, previous)
    finally:
        for future in (embedding, previous):
            if future is not None and not future.done():
                future.cancel()
    if mode == "vector":
        return vector, refined
    if plan.text_feedback is not None and textual:
        first = fusing(vector, textual) if mode == "hybrid" else textual
        expanded = await _expanded_text_side(session, corpus, text_query, first, clauses, depth, n_scope, plan)
        textual = expanded if expanded is not None else textual
    if mode == "text":
        return textual, refined
    return fusing(vector, textual), refined


async def load_rows(session: AsyncSession, corpus: Corpus, hits: list[Hit]) -> list[Hit]:
    """The hits with their rows loaded (embeddings left out), in the same order; a row gone since is dropped."""
    if not hits:
        return hits
    with timing.stage("load"):
        rows = await session.execute(select(corpus.model).options(defer(corpus.embedding))
                                     .where(corpus.id.in_([h.id for h in hits])))
        by_id = {row.id: row for row in rows.scalars()}
    for hit in hits:
        hit.row = by_id.get(hit.id)
    return [h for h in hits if h.row is not None]


async def search_memories(session: AsyncSession, org_id: uuid.UUID, query: MemorySearchIn, *,
                          scope: list | None = None,
                          query_vector: list[float] | None = None) -> tuple[list[Hit], str | None, bool]:
    """One page of hits (with their memories loaded), the cursor of the next page, and whether
    feedback refined the query. `scope` (SQL clauses) narrows it further, beyond what a request can say;
    `query_vector` is the query's embedding, if the caller has it."""
    settings = get_settings()
    offset = _decode_cursor(query)
    want = min(MAX_CANDIDATES, offset + query.top_k + 1)  # one more tells whether a next page exists
    narrowing = narrowing_clauses(query) + list(scope or [])
    depth = min(MAX_CANDIDATES, max(want, settings.search_candidates))
    plan = Plan(feedback=feedback_settings(query), text_feedback=text_feedback_settings(query),
                passages=settings.search_passages if query.passages is None else query.passages,
                similarity=query.min_similarity is not None)
    time_use = query.time or settings.search_time
    span = None
    if time_use != "off":
        span = await recency.query_span(session, org_id, query.query, query.as_of, org_clauses(org_id) + narrowing,
                                        whole_org=not narrowing)
        if span is not None and time_use == "filter":
            narrowing += recency.span_clauses(span)
    hits, refined = await rank(session, MEMORIES, org_id, query.query, query.mode, org_clauses(org_id) + narrowing,
                               whole_org=not narrowing, depth=depth, plan=plan, query_vector=query_vector,
                               fusing=lambda vector, textual: fuse(vector, textual, query.weights, query.fusion))
    if query.mode == "hybrid":
        hits = await recency.rerank(session, hits, span=span if time_use == "boost" else None,
                                    boost=settings.search_time_boost,
                                    # A query about a time asks what was true then, not what is now.
                                    recency=(settings.search_recency if query.recency is None else query.recency)
                                    and span is None)
    if query.min_score is not None:
        hits = [h for h in hits if h.score(query.mode) >= query.min_score]
    if query.min_similarity is not None:
        hits = [h for h in hits if h.similarity is not None and h.similarity >= query.min_similarity]
    page = await load_rows(session, MEMORIES, hits[offset:offset + query.top_k])
    more = len(hits) > offset + query.top_k and offset + query.top_k < MAX_CANDIDATES
    return page, (_encode_cursor(query, offset + query.top_k) if more else None), refined
