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
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from core import timing
from core.embedder import get_embedder
from core.errors import InvalidInput
from core.settings import get_settings
from pipelines.memories import fulltext
from pipelines.memories.corpus import MEMORIES, Corpus
from pipelines.memories.filters import narrowing_clauses, org_clauses
from schemas.search import Feedback, MemorySearchIn, Weights

MAX_CANDIDATES = 1000


@dataclass
class Hit:
    id: uuid.UUID
    vector_score: float | None = None
    vector_rank: int | None = None
    text_score: float | None = None
    text_rank: int | None = None
    fused_score: float | None = None
    row: Any = None  # the memory (or message), once loaded

    def score(self, mode: str) -> float:
        return {"vector": self.vector_score, "text": self.text_score}.get(mode, self.fused_score) or 0.0


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
                            n_scope: int | None = None, *, corpus: Corpus = MEMORIES) -> list[Hit]:
    """The corpus's rows (memories by default) within `clauses` nearest to an embedding already computed
    (cosine), best first."""
    rows = (await session.execute(await vector_statement(session, vector, clauses, limit, n_scope,
                                                         corpus=corpus))).all()
    # relaxed_order may return rows slightly out of order: sort them exactly.
    ranked = sorted(((row_id, 1.0 - float(d)) for row_id, d in rows), key=lambda r: -r[1])
    return [Hit(row_id, vector_score=s, vector_rank=i + 1) for i, (row_id, s) in enumerate(ranked)]


async def vector_statement(session: AsyncSession, vector: list[float], clauses: list, limit: int,
                           n_scope: int | None, *, corpus: Corpus = MEMORIES) -> Select:
    """The nearest-neighbour statement, with the session set up for it (HNSW iterative scan).

    A scope known to be small (`n_scope` rows, at most `search_exact_max`) is scanned exactly: the
    HNSW graph would have to be walked past every other scope's rows to fill the page.
    """
    distance = corpus.embedding.cosine_distance(vector)
    if n_scope is not None and n_scope <= get_settings().search_exact_max:
        # `+ 0` keeps the planner off the HNSW index: it reads the scope through its b-tree instead.
        order = distance + 0
    else:
        await prepare_hnsw(session, limit)
        order = distance
    return (select(corpus.id, distance.label("d")).where(*clauses, corpus.embedding.is_not(None))
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


def _merge(vector: list[Hit], textual: list[Hit]) -> dict[uuid.UUID, Hit]:
    merged: dict[uuid.UUID, Hit] = {}
    for hit in vector:
        merged[hit.id] = Hit(hit.id, vector_score=hit.vector_score, vector_rank=hit.vector_rank)
    for hit in textual:
        entry = merged.setdefault(hit.id, Hit(hit.id))
        entry.text_score, entry.text_rank = hit.text_score, hit.text_rank
    return merged


def _ranked(merged: dict[uuid.UUID, Hit]) -> list[Hit]:
    # Ties broken by id, so pages are stable.
    return sorted(merged.values(), key=lambda h: (-h.fused_score, str(h.id)))


def fuse_ranks(vector: list[Hit], textual: list[Hit], w_vector: float, w_text: float, rrf_k: float) -> list[Hit]:
    """Weighted reciprocal-rank fusion: Σ weight / (rrf_k + rank)."""
    merged = _merge(vector, textual)
    for entry in merged.values():
        entry.fused_score = ((w_vector / (rrf_k + entry.vector_rank) if entry.vector_rank else 0.0)
                             + (w_text / (rrf_k + entry.text_rank) if entry.text_rank else 0.0))
    return _ranked(merged)


def _standardized(scores: dict[uuid.UUID, float]) -> tuple[dict[uuid.UUID, float], float]:
    """z-scores within one list, and the lowest of them (what a memory missing from the list gets)."""
    if not scores:
        return {}, 0.0
    # Plain floats: `statistics.pstdev` computes exactly, with fractions: 8x slower on 100 candidates.
    values = list(scores.values())
    mean = math.fsum(values) / len(values)
    spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if spread <= 1e-12 * max(1.0, abs(mean)):
        # One candidate (or all equal): no spread to measure by, but being returned still counts:
        # one standard unit above every memory this side did not return.
        return dict.fromkeys(scores, 1.0), 0.0
    z = {row_id: (score - mean) / spread for row_id, score in scores.items()}
    return z, min(z.values())


def fuse_scores(vector: list[Hit], textual: list[Hit], w_vector: float, w_text: float) -> list[Hit]:
    """Convex fusion of standardized scores: Φ((w_v·z_vector + w_t·z_text) / (w_v + w_t)), in (0, 1).

    Unlike reciprocal ranks, it keeps how far ahead a hit is within each list: a memory far above
    the rest by meaning is not pulled level with one that merely shares a word. Each side's scores
    are standardized within its candidates (cosine and BM25 have different scales); a memory one
    side did not return gets that side's lowest. Φ only maps the result into (0, 1).
    """
    merged = _merge(vector, textual)
    z_vector, floor_vector = _standardized({h.id: h.vector_score for h in vector})
    z_text, floor_text = _standardized({h.id: h.text_score for h in textual})
    total = (w_vector + w_text) or 1.0
    for row_id, entry in merged.items():
        mixed = (w_vector * z_vector.get(row_id, floor_vector) + w_text * z_text.get(row_id, floor_text)) / total
        entry.fused_score = 0.5 * (1 + math.erf(mixed / math.sqrt(2)))
    return _ranked(merged)


async def _embed_query(query: str) -> list[float]:
    """The query's embedding; its time (it runs alongside the database work) is reported as `embed`."""
    with timing.stage("embed"):
        [vector] = await get_embedder().embed([query], urgent=True)
    return vector


async def _given(vector: list[float]) -> list[float]:
    return vector


def fuse(vector: list[Hit], textual: list[Hit], weights: Weights | None = None,
         fusion: str | None = None) -> list[Hit]:
    """Hybrid fusion with the request's weights and method, else the service's."""
    settings = get_settings()
    w_vector = weights.vector if weights else settings.search_vector_weight
    w_text = weights.text if weights else settings.search_text_weight
    if (fusion or settings.search_fusion) == "rrf":
        return fuse_ranks(vector, textual, w_vector, w_text,
                          (weights.rrf_k if weights else None) or settings.search_rrf_k)
    return fuse_scores(vector, textual, w_vector, w_text)


def feedback_settings(query: MemorySearchIn) -> tuple[int, float] | None:
    """(docs, weight) of the pseudo-relevance feedback this search uses, or None."""
    return feedback_for(query.mode, query.feedback)


def feedback_for(mode: str, wanted: bool | Feedback | None = None) -> tuple[int, float] | None:
    """(docs, weight) of the feedback a search in `mode` uses, as asked (`wanted`), else the service's default."""
    settings = get_settings()
    if wanted is None:
        wanted = settings.search_feedback and mode == "hybrid"
    if wanted is False or mode == "text":
        return None
    docs = (wanted.docs if isinstance(wanted, Feedback) else None) or settings.search_feedback_docs
    weight = wanted.weight if isinstance(wanted, Feedback) and wanted.weight is not None \
        else settings.search_feedback_weight
    return (docs, weight) if weight > 0 else None


def refine(query_vector: list[float], feedback: list[list[float]], weight: float) -> list[float]:
    """Rocchio's refinement: the query's embedding plus `weight` × the mean of the feedback embeddings,
    normalized (cosine ignores length, but it keeps scores comparable)."""
    n = len(feedback)
    mixed = [q + weight * sum(column) / n for q, column in zip(query_vector, zip(*feedback, strict=True), strict=True)]
    norm = math.sqrt(sum(x * x for x in mixed)) or 1.0
    return [x / norm for x in mixed]


async def _embeddings_of(session: AsyncSession, corpus: Corpus, ids: list[uuid.UUID]) -> list[list[float]]:
    rows = await session.execute(select(corpus.embedding).where(corpus.id.in_(ids), corpus.embedding.is_not(None)))
    return [list(map(float, vector)) for vector in rows.scalars()]


Fusing = Callable[[list[Hit], list[Hit]], list[Hit]]


async def _meaning_side(session: AsyncSession, corpus: Corpus, mode: str, embedding: asyncio.Future,
                        textual: list[Hit], clauses: list, depth: int, n_scope: int, fusing: Fusing,
                        feedback: tuple[int, float] | None) -> tuple[list[Hit], bool]:
    """The vector candidates, and whether feedback refined the query they were found with."""
    with timing.stage("embed_wait"):
        query_vector = await embedding
    with timing.stage("vector"):
        vector = await vector_neighbours(session, query_vector, clauses, depth, n_scope, corpus=corpus)
    if feedback is None or not vector:
        return vector, False
    # The first pass's best hits (fused, in hybrid) pull the query towards what it found.
    with timing.stage("feedback"):
        docs, weight = feedback
        first = fusing(vector, textual) if mode == "hybrid" else vector
        found = await _embeddings_of(session, corpus, [h.id for h in first[:docs]])
        if not found:
            return vector, False
        return await vector_neighbours(session, refine(query_vector, found, weight), clauses, depth, n_scope,
                                       corpus=corpus), True


async def rank(session: AsyncSession, corpus: Corpus, org_id: uuid.UUID, text_query: str, mode: str,
               clauses: list, *, whole_org: bool, depth: int, fusing: Fusing = fuse,
               feedback: tuple[int, float] | None = None,
               query_vector: list[float] | None = None) -> tuple[list[Hit], bool]:
    """The corpus's rows within `clauses` (which hold `corpus.org_clauses`) ranked for the query in `mode`,
    up to `depth` per side, best first; and whether feedback refined the query. `whole_org`: the clauses
    narrow the organization's live rows little or not at all, so its size can stand for the scope's.
    `query_vector`: the query's embedding, if the caller has it already."""
    settings = get_settings()
    # The query's embedding is computed on the model thread while the database sizes the scope and
    # ranks by text; the vector side then waits for it.
    embedding = None
    if mode != "text":
        embedding = asyncio.ensure_future(_embed_query(text_query) if query_vector is None
                                          else _given(query_vector))
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
                                                  fusing, feedback)
    finally:
        if embedding is not None and not embedding.done():
            embedding.cancel()
    if mode == "vector":
        return vector, refined
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
    hits, refined = await rank(session, MEMORIES, org_id, query.query, query.mode, org_clauses(org_id) + narrowing,
                               whole_org=not narrowing, depth=depth, feedback=feedback_settings(query),
                               query_vector=query_vector,
                               fusing=lambda vector, textual: fuse(vector, textual, query.weights, query.fusion))
    if query.min_score is not None:
        hits = [h for h in hits if h.score(query.mode) >= query.min_score]
    page = await load_rows(session, MEMORIES, hits[offset:offset + query.top_k])
    more = len(hits) > offset + query.top_k and offset + query.top_k < MAX_CANDIDATES
    return page, (_encode_cursor(query, offset + query.top_k) if more else None), refined
