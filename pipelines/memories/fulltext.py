"""The text side of search: BM25 over PostgreSQL full-text search, in one round trip.

It ranks any `Corpus` (`pipelines/memories/corpus.py`): memories by default, conversation messages too.

PostgreSQL can find the rows holding a word through the GIN index on `fts`, but it cannot return
the best-ranked of them without scoring every match: an OR of a question's words can match a third
of a 100,000-memory organization. So the match is narrowed the way MaxScore narrows it. Words are
taken rarest first (document frequencies estimated from the planner's lexeme statistics,
`pg_stats.most_common_elems`) while the estimated matches in the search's scope stay within
`search_text_match_budget`; only rows holding one of those words are scored, and never more rows than
the budget: when even the rarest word is that common, the first rows found holding it are scored (an
organization of a million memories holds tens of thousands of rows for any everyday word, and scoring
them all took 200-450 ms). A row holding none of the words matched on can only score what the
commonest words give, which is little (their IDF is low). In a scope
no larger than the budget every word is used, and the ranking is exact BM25: document frequencies
are counted among the matches, which are all the scope's rows holding the word.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import column, func, literal_column, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import TextualSelect

from core.db import session_scope
from core.settings import get_settings
from pipelines.memories.corpus import MEMORIES, Corpus

_STATS_TTL_SECONDS = 300.0
_ORG_SIZE_TTL_SECONDS = 60.0
log = logging.getLogger(__name__)


@dataclass
class TermStatistics:
    """The fraction of rows holding each common lexeme; a lexeme not listed is rarer than `floor`."""

    frequencies: dict[str, float]
    floor: float
    loaded_at: float

    def frequency(self, lexeme: str) -> float:
        return self.frequencies.get(lexeme, self.floor)


_stats: dict[str, TermStatistics] = {}  # by table


async def term_statistics(session: AsyncSession, corpus: Corpus = MEMORIES) -> TermStatistics:
    """The planner's lexeme frequencies for the corpus's `fts` (refreshed every few minutes; empty before ANALYZE)."""
    cached = _stats.get(corpus.name)
    if cached is not None and time.monotonic() - cached.loaded_at < _STATS_TTL_SECONDS:
        return cached
    row = (await session.execute(text(
        "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
        "WHERE schemaname = current_schema() AND tablename = :table AND attname = 'fts'"),
        {"table": corpus.name})).first()
    frequencies: dict[str, float] = {}
    floor = 0.0
    if row is not None and row[0]:
        lexemes, freqs = row
        # ts_typanalyze appends the minimum and maximum frequency (and the null fraction) after the list.
        frequencies = {lexeme: float(f) for lexeme, f in zip(lexemes, freqs, strict=False)}
        floor = min(frequencies.values())
    _stats[corpus.name] = TermStatistics(frequencies, floor, time.monotonic())
    return _stats[corpus.name]


OrgKey = tuple[str, uuid.UUID]  # (table, organization)
_org_sizes: dict[OrgKey, tuple[int, float]] = {}
_refreshing: dict[OrgKey, asyncio.Task] = {}


async def _count_org(session: AsyncSession, corpus: Corpus, org_id: uuid.UUID) -> int:
    size = (await session.execute(select(func.count()).select_from(corpus.model)
                                  .where(*corpus.org_clauses(org_id)))).scalar_one()
    _org_sizes[corpus.name, org_id] = (size, time.monotonic())
    return size


async def _refresh_org_size(corpus: Corpus, org_id: uuid.UUID) -> None:
    try:
        async with session_scope() as session:
            await _count_org(session, corpus, org_id)
    except Exception as exc:  # the old size serves until the next attempt
        log.warning("organization size not refreshed: %s", exc)
    finally:
        _refreshing.pop((corpus.name, org_id), None)


async def org_size(session: AsyncSession, org_id: uuid.UUID, corpus: Corpus = MEMORIES) -> int:
    """The organization's live rows in the corpus: counted on first use, then at most a minute old. A stale
    size is returned at once and recounted in the background, so no search waits for a full count."""
    key = (corpus.name, org_id)
    cached = _org_sizes.get(key)
    if cached is None:
        return await _count_org(session, corpus, org_id)
    if time.monotonic() - cached[1] > _ORG_SIZE_TTL_SECONDS and key not in _refreshing:
        _refreshing[key] = asyncio.create_task(_refresh_org_size(corpus, org_id))
    return cached[0]


async def scope_size(session: AsyncSession, org_id: uuid.UUID, clauses: list, exact_up_to: int, *,
                     estimate: bool = True, whole_org: bool = False, corpus: Corpus = MEMORIES) -> tuple[int, bool]:
    """How many live rows of the corpus the filters admit, and whether that is an exact count.

    Counting stops past `exact_up_to`; a larger scope is estimated by its organization's size
    (`org_size`), an upper bound that errs towards pruning, or, without `estimate`, reported as
    `exact_up_to + 1`. A search of the `whole_org`, once that is known to be larger than
    `exact_up_to`, is not counted at all.
    """
    if whole_org:
        size = await org_size(session, org_id, corpus)
        if size > exact_up_to:
            return (size if estimate else exact_up_to + 1), False
    inner = select(literal_column("1")).select_from(corpus.model).where(*clauses).limit(exact_up_to + 1).subquery()
    counted = (await session.execute(select(func.count()).select_from(inner))).scalar_one()
    if counted <= exact_up_to or not estimate:
        return counted, counted <= exact_up_to
    return max(counted, await org_size(session, org_id, corpus)), False


def match_terms(terms: list[str], stats: TermStatistics, n_scope: int, budget: int) -> list[str]:
    """The rarest query words whose estimated matches in the scope fit the budget (at least one)."""
    ranked = sorted(terms, key=lambda t: (stats.frequency(t), t))
    chosen: list[str] = []
    expected = 0.0
    for term in ranked:
        expected += stats.frequency(term) * n_scope
        if chosen and expected > budget:
            break
        chosen.append(term)
    return chosen


def _or_query(terms: list[str]):
    return func.to_tsquery("simple", " | ".join("'" + t.replace("'", "''") + "'" for t in terms))


async def query_terms(session: AsyncSession, query: str) -> list[str]:
    """The query's lexemes under the search's text configuration (stop words dropped)."""
    rows = await session.execute(text("SELECT lexeme FROM unnest(to_tsvector(CAST(:cfg AS regconfig), :q))"),
                                 {"cfg": get_settings().search_text_config, "q": query})
    return [row[0] for row in rows]


async def bm25_ranking(session: AsyncSession, query: str, clauses: list, limit: int, n_scope: int, *,
                       corpus: Corpus = MEMORIES, extra: dict[str, float] | None = None,
                       ) -> list[tuple[uuid.UUID, float]]:
    """The `limit` best rows of the corpus for the query's words by BM25, as (id, score), best first.
    `extra`: more words (lexemes), each counted with its weight (the query's own count 1)."""
    statement = await bm25_statement(session, query, clauses, limit, n_scope, corpus=corpus, extra=extra)
    if statement is None:
        return []  # only stop words
    return [(row_id, float(value)) for row_id, value in await session.execute(statement)]


def _fragment(sql: str, *columns: str, **params) -> TextualSelect:
    return text(sql).bindparams(**params).columns(*(column(c) for c in columns))


# BM25 over the `matched` rows (id, fts, len), computed in PostgreSQL. Only `matched` (the search's filters)
# is built per search; the rest is fixed SQL with its values bound, so SQLAlchemy neither constructs nor keys
# a large expression tree for every query (that was 2.5 of the 4.1 ms of CPU a ranking cost the API). The
# words come as arrays (`q`): each with its weight (1 for the query's own, RM3's for an added word) and, for a
# word not matched on (or cut by the budget), its estimated number of matches in the scope, else 0.
_Q = "SELECT * FROM unnest(CAST(:lexemes AS text[]), CAST(:estimated AS float8[]), CAST(:weights AS float8[])) " \
     "AS q(lexeme, est, weight)"
# Per matching row, the count of each query word it holds. Rather than unnest every word of the row and keep
# the query's, the query's words are picked out in C: weighted A (`fts` holds no weights of its own), then
# filtered on that weight; several times faster on long memories.
_HITS = """SELECT matched.id, matched.len, w.lexeme, coalesce(array_length(w.positions, 1), 1) AS tf
FROM matched, LATERAL unnest(ts_filter(setweight(matched.fts, 'A', CAST(:terms AS text[])), '{a}'::"char"[]))
     AS w(lexeme, positions, weights)"""
_DOCS = "SELECT id, max(len) AS len FROM hits GROUP BY id"
# BM25's length norm k1·(1 − b + b·len/avg_len) = k1·(1 − b) + len_factor·len, len_factor computed once.
_TOTALS = "SELECT count(*) AS n, CAST(:k1b AS float8) / greatest(CAST(avg(len) AS float8), 1.0) AS len_factor " \
          "FROM docs"
# The IDF once per word, not once per (row, word). A word matched on is counted exactly (every row holding it
# is here, unless the budget cut them); the others, which only add to the score, are estimated. Counted first,
# by word alone (a hash of a few dozen groups), then joined to the words' weights: grouped by all of them, the
# (row, word) pairs were sorted by their text, twice (6 of the 22 ms a ranking took at 100,000 memories).
_COUNTS = "SELECT lexeme, count(*) AS n FROM hits GROUP BY lexeme"
_DF = """SELECT counts.lexeme, q.weight,
       ln(1 + (greatest(CAST(:n_scope AS float8), totals.n) - greatest(counts.n, q.est) + 0.5)
              / (greatest(counts.n, q.est) + 0.5)) AS idf
FROM counts JOIN q ON q.lexeme = counts.lexeme CROSS JOIN totals"""
_SCORE = """SELECT hits.id, sum(df.weight * df.idf * hits.tf * (CAST(:k1 AS float8) + 1)
                    / (hits.tf + CAST(:k1_1b AS float8) + totals.len_factor * hits.len)) AS score
FROM hits JOIN df ON df.lexeme = hits.lexeme CROSS JOIN totals
GROUP BY hits.id ORDER BY score DESC, hits.id LIMIT :limit"""


async def bm25_statement(session: AsyncSession, query: str, clauses: list, limit: int, n_scope: int, *,
                         corpus: Corpus = MEMORIES, extra: dict[str, float] | None = None) -> TextualSelect | None:
    """The one statement that ranks (None: the query holds only stop words).

    The matching rows' term counts, the document frequencies and the scores are all computed in
    PostgreSQL, and only the `limit` best rows come back.
    """
    settings = get_settings()
    terms = await query_terms(session, query)
    extra = {t: w for t, w in (extra or {}).items() if t not in terms}
    terms += list(extra)
    if not terms:
        return None
    stats = await term_statistics(session, corpus)
    fts = corpus.fts
    budget = settings.search_text_match_budget
    narrowed = match_terms(terms, stats, n_scope, budget)
    match = _or_query(narrowed)
    # A scope within the budget is cheaper to read through its b-tree and test row by row than to
    # intersect with the GIN index's (organization-wide) posting lists; the function form of `@@`
    # keeps the planner off the GIN index.
    matches = func.ts_match_vq(fts, match) if n_scope <= budget else fts.op("@@")(match)
    # A document's length: its distinct words (`length(fts)`), or its size in bytes (read from the
    # value's header, without decompressing it), which grows with a long reply as its words do not.
    length = func.length(fts) if settings.search_bm25_length == "words" else func.octet_length(corpus.content)
    matched = select(corpus.id.label("id"), fts.label("fts"), length.label("len")).where(*clauses, matches)
    expected = {t: stats.frequency(t) * n_scope for t in terms}  # estimated matches in the scope, per word
    estimated = {t: n for t, n in expected.items() if t not in narrowed}
    if n_scope > budget:
        # The budget is a bound, not only a target: when even the rarest word is common (a question made
        # only of everyday words, in a scope of millions), the rows scored are the first `budget` found.
        # Such a word's weight is then its estimated frequency, not its count among those rows.
        matched = matched.limit(budget)
        estimated |= {t: expected[t] for t in narrowed if expected[t] > budget}
    k1, b = settings.search_bm25_k1, settings.search_bm25_b
    q = _fragment(_Q, "lexeme", "est", "weight", lexemes=terms, estimated=[float(estimated.get(t, 0.0)) for t in terms],
                  weights=[float(extra.get(t, 1.0)) for t in terms])
    return (_fragment(_SCORE, "id", "score", k1=float(k1), k1_1b=float(k1 * (1 - b)), limit=limit)
            .add_cte(matched.cte("matched"), q.cte("q"), _fragment(_HITS, "id", "len", "lexeme", "tf", terms=terms)
                     .cte("hits"), _fragment(_DOCS, "id", "len").cte("docs"),
                     _fragment(_TOTALS, "n", "len_factor", k1b=float(k1 * b)).cte("totals"),
                     _fragment(_COUNTS, "lexeme", "n").cte("counts"),
                     _fragment(_DF, "lexeme", "weight", "idf", n_scope=float(n_scope)).cte("df")))


async def feedback_terms(session: AsyncSession, query: str, docs: list[tuple[uuid.UUID, float]], n_terms: int, *,
                         corpus: Corpus = MEMORIES) -> dict[str, float]:
    """RM3's expansion words: those most typical of the feedback `docs` (id, weight), none of the query's.

    Each word scores Σ_doc weight(doc) · tf(word, doc) / |doc| (the relevance model), times its rarity
    (the log of its inverse frequency from the planner's statistics), so a word every long reply holds
    ("use", "also") does not crowd out the ones these hits share. The best `n_terms`, scaled to the
    best's 1.
    """
    if not docs or n_terms <= 0:
        return {}
    own = set(await query_terms(session, query))
    stats = await term_statistics(session, corpus)
    words = func.unnest(corpus.fts).table_valued("lexeme", "positions", "weights").lateral("w")
    rows = await session.execute(
        select(corpus.id, words.c.lexeme, func.coalesce(func.array_length(words.c.positions, 1), 1))
        .select_from(corpus.model).join(words, true()).where(corpus.id.in_([d for d, _ in docs])))
    counts: dict[uuid.UUID, dict[str, int]] = {}
    for row_id, lexeme, tf in rows:
        counts.setdefault(row_id, {})[lexeme] = tf
    total_weight = sum(max(w, 0.0) for _, w in docs) or 1.0
    model: dict[str, float] = {}
    for row_id, weight in docs:
        tfs = counts.get(row_id)
        if not tfs:
            continue
        length = sum(tfs.values())
        for lexeme, tf in tfs.items():
            if lexeme in own or len(lexeme) < 3 or lexeme.isdigit():
                continue
            model[lexeme] = model.get(lexeme, 0.0) + max(weight, 0.0) / total_weight * tf / length
    floor = max(stats.floor, 1e-4)
    scored = {t: p * math.log(1.0 / max(stats.frequency(t), floor)) for t, p in model.items()}
    best = sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))[:n_terms]
    top = best[0][1] if best and best[0][1] > 0 else 0.0
    return {t: v / top for t, v in best if v > 0} if top else {}
