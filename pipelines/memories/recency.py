"""What time does to a ranking: the query's own time (boost or filter), and recency among near-duplicates.

A memory's time is its `metadata.<search_time_key>` (ISO 8601, a date given at ingest), else its
`created_at`; compared by day. Ties (one session's messages share a date) are broken by when the
memory was stored, then by its place in its ingest batch.

- Time in the query (`pipelines/memories/timeref.py`): `filter` adds a clause, so the page fills with
  memories of that time; `boost` moves those among a hybrid search's candidates up by
  `search_time_boost` standard units (the fused score is a normal CDF of a standardized mix). An
  anchored reference ("before the trip") first finds its event by words in the same scope, and
  takes that memory's day; only in a scope of at most `search_exact_max` memories (in a larger one
  it would cost a second full-text ranking, and is ignored).
- Recency: facts change ("my sister moved to Lyon" after "my sister lives in Paris"). Among a hybrid
  search's best `search_recency_window` hits, hits whose embeddings are near-duplicates
  (`search_recency_similarity`) are one group; a group's members keep the group's places and
  scores, newest in the best place. Hits that are not alike are left where they are. A query with a
  time of its own asks what was true then: recency does not apply to it.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from statistics import NormalDist

from sqlalchemy import String, cast, func, null, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from core import timing
from core.settings import get_settings
from pipelines.memories import fulltext
from pipelines.memories.fusion import Hit
from pipelines.memories.timeref import TimeRef, parse
from schemas.tables import Memory

_NORMAL = NormalDist()


def memory_day() -> ColumnElement[str]:
    """A memory's day as `YYYY-MM-DD`: its metadata date if it has one, else the day it was stored (UTC)."""
    stored = func.to_char(func.timezone("UTC", Memory.created_at), "YYYY-MM-DD")
    return func.left(func.coalesce(cast(Memory.meta[get_settings().search_time_key].astext, String), stored), 10)


def span_clauses(span: TimeRef) -> list[ColumnElement[bool]]:
    """Memories whose day is within the span."""
    day = memory_day()
    clauses = []
    if span.start is not None:
        clauses.append(day >= span.start.isoformat())
    if span.end is not None:
        clauses.append(day < span.end.isoformat())
    return clauses


async def query_span(session: AsyncSession, org_id: uuid.UUID, query: str, as_of: datetime | None,
                     clauses: list, *, whole_org: bool) -> TimeRef | None:
    """The days the query is about, read relative to `as_of` (default now); an anchored reference is
    resolved by the best memory in the scope for its event's words (None: no time, or no such event)."""
    today = (as_of or datetime.now().astimezone()).date()
    ref = parse(query, today)
    if ref is None or ref.event is None:
        return ref
    with timing.stage("time"):
        limit = get_settings().search_exact_max
        n_scope, exact = await fulltext.scope_size(session, org_id, clauses, limit, estimate=False,
                                                   whole_org=whole_org)
        if not exact:
            # A second full-text ranking over a large scope would cost as much as the search's own
            # (measured: hybrid p99 44 → 73 ms at 100,000 memories); there the event is not looked up.
            return None
        best = await fulltext.bm25_ranking(session, ref.event, clauses, 1, n_scope)
        if not best:
            return None
        day = (await session.execute(select(memory_day()).where(Memory.id == best[0][0]))).scalar_one_or_none()
    try:
        return ref.around(date.fromisoformat(day)) if day else None
    except ValueError:
        return None


async def _times(session: AsyncSession, ids: list[uuid.UUID], similarity: float | None
                 ) -> tuple[dict[uuid.UUID, tuple], dict[uuid.UUID, list[uuid.UUID]]]:
    """Each memory's (day, created_at, source_index); with `similarity`, also the others among `ids` whose
    embeddings are at least that alike (cosine), as pairs compared in PostgreSQL: the pairs come back, not
    twenty vectors to parse in Python (that took 3.5 ms of CPU a search). Vectors of different dimensions (a
    switch of models under way) are not compared."""
    columns = select(Memory.id, memory_day().label("day"), Memory.created_at, Memory.source_index)
    if similarity is None:  # the time boost alone
        statement = columns.where(Memory.id.in_(ids)).add_columns(null())
    else:
        rows = columns.add_columns(Memory.embedding).where(Memory.id.in_(ids)).cte("window")
        other = rows.alias("other")
        comparable = func.vector_dims(other.c.embedding) == func.vector_dims(rows.c.embedding)
        near = (select(func.array_agg(other.c.id))
                .where(other.c.id > rows.c.id, comparable,
                       rows.c.embedding.cosine_distance(other.c.embedding) <= 1.0 - similarity)
                .scalar_subquery())
        statement = select(rows.c.id, rows.c.day, rows.c.created_at, rows.c.source_index, near)
    result = await session.execute(statement)
    times: dict[uuid.UUID, tuple] = {}
    pairs: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row_id, day, created, index, alike in result:
        times[row_id] = (day, created, index)
        if alike:
            pairs[row_id] = alike
    return times, pairs


def _within(day: str | None, span: TimeRef) -> bool:
    if not day:
        return False
    return ((span.start is None or day >= span.start.isoformat())
            and (span.end is None or day < span.end.isoformat()))


def boosted(score: float, boost: float) -> float:
    """A fused score (in (0, 1)) moved up by `boost` standard units: Φ(Φ⁻¹(score) + boost), still in (0, 1)."""
    clamped = min(max(score, 1e-9), 1 - 1e-9)
    return _NORMAL.cdf(_NORMAL.inv_cdf(clamped) + boost)


def _newest_first(key: tuple) -> tuple:
    day, created, index = key
    return (day or "", created, -1 if index is None else index)


async def rerank(session: AsyncSession, hits: list[Hit], *, span: TimeRef | None, boost: float,
                 recency: bool) -> list[Hit]:
    """Hybrid hits (fused, best first) with the time boost and recency applied."""
    settings = get_settings()
    if not hits or (span is None or boost <= 0) and not recency:
        return hits
    window = settings.search_recency_window if recency else 0
    with timing.stage("recency"):
        ids = [h.id for h in hits] if span is not None and boost > 0 else [h.id for h in hits[:window]]
        times, near = await _times(session, ids, settings.search_recency_similarity if recency else None)
        if span is not None and boost > 0:
            for hit in hits:
                if _within(times.get(hit.id, (None,))[0], span):
                    hit.fused_score = boosted(hit.fused_score or 0.0, boost)
            hits = sorted(hits, key=lambda h: (-(h.fused_score or 0.0), str(h.id)))
        if recency:
            hits = _recent_first(hits, times, window, near)
    return hits


def _recent_first(hits: list[Hit], times: dict[uuid.UUID, tuple], window: int,
                  near: dict[uuid.UUID, list[uuid.UUID]]) -> list[Hit]:
    group = {h.id: h.id for h in hits[:window] if h.id in times}

    def root(x: uuid.UUID) -> uuid.UUID:
        while group[x] != x:
            group[x] = group[group[x]]
            x = group[x]
        return x

    for a, alike in near.items():
        for b in alike:
            if a in group and b in group:
                group[root(b)] = root(a)
    members: dict[uuid.UUID, list[int]] = {}
    for position, hit in enumerate(hits[:window]):
        if hit.id in group:
            members.setdefault(root(hit.id), []).append(position)
    out = list(hits)
    for positions in members.values():
        if len(positions) < 2:
            continue
        scores = [hits[p].fused_score for p in positions]
        newest = sorted((hits[p] for p in positions), key=lambda h: _newest_first(times[h.id][:3]), reverse=True)
        for p, hit, score in zip(positions, newest, scores, strict=True):
            hit.fused_score = score
            out[p] = hit
    return out

