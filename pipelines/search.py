"""Search memories: vector similarity, full-text (BM25), or both fused by weighted reciprocal rank.

- vector: the query's embedding against pgvector's HNSW index (cosine), filters applied during
  the scan (iterative scan) so a narrow scope still fills the page.
- text: PostgreSQL full-text search finds the memories sharing a word (stem) with the query
  through the GIN index on `fts` (an OR of the query's lexemes, not AND: questions rarely repeat
  every word of the answer); they are ranked by BM25, computed here from term frequencies and
  document frequencies within the same filters, because `ts_rank` has no inverse document
  frequency and lets common words dominate.
- hybrid: each list is ranked on its own; score = Σ weight / (rrf_k + rank).
Every hit carries both scores and ranks, so a caller can see why it was found.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from dataclasses import dataclass

from sqlalchemy import func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from core.embedder import get_embedder
from core.errors import InvalidInput
from core.settings import get_settings
from pipelines.filters import search_clauses
from schemas.search import MemorySearchIn
from schemas.tables import Memory

FTS = literal_column("memories.fts")
MAX_CANDIDATES = 1000


@dataclass
class Hit:
    memory_id: uuid.UUID
    vector_score: float | None = None
    vector_rank: int | None = None
    text_score: float | None = None
    text_rank: int | None = None
    fused_score: float | None = None
    memory: Memory | None = None

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


async def vector_candidates(session: AsyncSession, text_query: str, clauses: list, limit: int) -> list[Hit]:
    """The nearest memories by cosine similarity, best first."""
    [vector] = await get_embedder().embed([text_query])
    return await vector_neighbours(session, vector, clauses, limit)


async def vector_neighbours(session: AsyncSession, vector: list[float], clauses: list, limit: int) -> list[Hit]:
    """The memories within `clauses` nearest to an embedding already computed (cosine), best first."""
    await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, limit))}"))
    distance = Memory.embedding.cosine_distance(vector)
    rows = (await session.execute(select(Memory.id, distance.label("d")).where(
        *clauses, Memory.embedding.is_not(None)).order_by(distance).limit(limit))).all()
    # relaxed_order may return rows slightly out of order: sort them exactly.
    ranked = sorted(((row_id, 1.0 - float(d)) for row_id, d in rows), key=lambda r: -r[1])
    return [Hit(row_id, vector_score=s, vector_rank=i + 1) for i, (row_id, s) in enumerate(ranked)]


async def text_candidates(session: AsyncSession, text_query: str, clauses: list, limit: int) -> list[Hit]:
    """Memories sharing a word with the query, ranked by BM25 within the search's filters."""
    settings = get_settings()
    terms = [row[0] for row in await session.execute(
        text("SELECT lexeme FROM unnest(to_tsvector(CAST(:cfg AS regconfig), :q))"),
        {"cfg": settings.search_text_config, "q": text_query})]
    if not terms:
        return []  # only stop words
    any_term = func.to_tsquery("simple", " | ".join("'" + t.replace("'", "''") + "'" for t in terms))
    pool = max(limit, settings.search_text_pool)
    # The pool: matches in the filters, pre-ranked by ts_rank_cd (cheap, from the index's positions).
    pool_rows = (await session.execute(
        select(Memory.id, func.length(FTS)).where(*clauses, FTS.op("@@")(any_term))
        .order_by(func.ts_rank_cd(FTS, any_term).desc()).limit(pool))).all()
    if not pool_rows:
        return []
    lengths = {row_id: max(1, n) for row_id, n in pool_rows}
    tf_rows = await session.execute(
        text("SELECT m.id, u.lexeme, coalesce(array_length(u.positions, 1), 1) FROM memories m, unnest(m.fts) u "
             "WHERE m.id = ANY(:ids) AND u.lexeme = ANY(:terms)"), {"ids": list(lengths), "terms": terms})
    tf: dict[uuid.UUID, dict[str, int]] = {}
    df: dict[str, int] = {}
    for row_id, lexeme, count in tf_rows:
        tf.setdefault(row_id, {})[lexeme] = count
        df[lexeme] = df.get(lexeme, 0) + 1
    n_docs = (await session.execute(select(func.count()).select_from(Memory).where(*clauses))).scalar_one()
    k1, b = settings.search_bm25_k1, settings.search_bm25_b
    avg_len = sum(lengths.values()) / len(lengths)
    scores = []
    for row_id, length in lengths.items():
        score = 0.0
        for lexeme, count in tf.get(row_id, {}).items():
            idf = math.log(1 + (max(n_docs, len(lengths)) - df[lexeme] + 0.5) / (df[lexeme] + 0.5))
            score += idf * count * (k1 + 1) / (count + k1 * (1 - b + b * length / avg_len))
        scores.append((row_id, score))
    scores.sort(key=lambda r: (-r[1], str(r[0])))
    return [Hit(row_id, text_score=s, text_rank=i + 1) for i, (row_id, s) in enumerate(scores[:limit])]


def fuse(vector: list[Hit], textual: list[Hit], w_vector: float, w_text: float, rrf_k: float) -> list[Hit]:
    """Weighted reciprocal-rank fusion of two ranked lists (ties broken by id, so pages are stable)."""
    merged: dict[uuid.UUID, Hit] = {}
    for hit in vector:
        merged[hit.memory_id] = Hit(hit.memory_id, vector_score=hit.vector_score, vector_rank=hit.vector_rank)
    for hit in textual:
        entry = merged.setdefault(hit.memory_id, Hit(hit.memory_id))
        entry.text_score, entry.text_rank = hit.text_score, hit.text_rank
    for entry in merged.values():
        entry.fused_score = ((w_vector / (rrf_k + entry.vector_rank) if entry.vector_rank else 0.0)
                             + (w_text / (rrf_k + entry.text_rank) if entry.text_rank else 0.0))
    return sorted(merged.values(), key=lambda h: (-h.fused_score, str(h.memory_id)))


async def search_memories(session: AsyncSession, org_id: uuid.UUID,
                          query: MemorySearchIn) -> tuple[list[Hit], str | None]:
    """One page of hits (with their memories loaded) and the cursor of the next page."""
    settings = get_settings()
    offset = _decode_cursor(query)
    want = min(MAX_CANDIDATES, offset + query.top_k + 1)  # one more tells whether a next page exists
    clauses = search_clauses(org_id, query)
    depth = min(MAX_CANDIDATES, max(want, settings.search_candidates))
    vector = await vector_candidates(session, query.query, clauses, depth) if query.mode != "text" else []
    textual = await text_candidates(session, query.query, clauses, depth) if query.mode != "vector" else []
    if query.mode == "vector":
        hits = vector
    elif query.mode == "text":
        hits = textual
    else:
        weights = query.weights
        hits = fuse(vector, textual, weights.vector if weights else settings.search_vector_weight,
                    weights.text if weights else settings.search_text_weight,
                    (weights.rrf_k if weights else None) or settings.search_rrf_k)
    if query.min_score is not None:
        hits = [h for h in hits if h.score(query.mode) >= query.min_score]
    page = hits[offset:offset + query.top_k]
    more = len(hits) > offset + query.top_k and offset + query.top_k < MAX_CANDIDATES
    if page:
        rows = await session.execute(select(Memory).options(defer(Memory.embedding))
                                     .where(Memory.id.in_([h.memory_id for h in page])))
        by_id = {m.id: m for m in rows.scalars()}
        for hit in page:
            hit.memory = by_id.get(hit.memory_id)
        page = [h for h in page if h.memory is not None]
    return page, _encode_cursor(query, offset + query.top_k) if more else None
