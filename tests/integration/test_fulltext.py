"""BM25 in PostgreSQL (pipelines/memories/fulltext.py) against real PostgreSQL: the SQL arithmetic equals a
reference computed here, and narrowing a large scope to its rarest words keeps the best rows."""

from __future__ import annotations

import math
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from core.db import session_scope
from core.settings import get_settings
from pipelines.memories import fulltext
from pipelines.memories.filters import search_clauses
from schemas.search import MemorySearchIn
from tests.support.tenants import make_tenant

CORPUS = [
    "The plumber fixed the kitchen sink on Tuesday.",
    "The plumber and the plumber's apprentice came back on Friday to fix the sink again.",
    "My kitchen has a new sink.",
    "We painted the kitchen yellow.",
    "Tuesday is my sister's birthday.",
    "The electrician rewired the garage.",
]


async def _insert(org_id: uuid.UUID, scope: str, contents: list[str]) -> dict[uuid.UUID, str]:
    ids = {}
    async with session_scope() as session:
        for i, content in enumerate(contents):
            row_id = uuid.uuid4()
            ids[row_id] = content
            await session.execute(text(
                "INSERT INTO memories (id, org_id, user_id, content, metadata, content_hash) "
                "VALUES (:id, :org, :scope, :content, '{}', :hash)"),
                {"id": row_id, "org": org_id, "scope": scope, "content": content, "hash": f"{scope}-{i}"})
        await session.commit()
    return ids


async def _reference(org_id: uuid.UUID, scope: str, query: str) -> dict[uuid.UUID, float]:
    """BM25 computed here from the rows' tsvectors, over the whole scope (k1, b and the length measure from
    settings: distinct words, or bytes of text)."""
    settings = get_settings()
    length_sql = "length(m.fts)" if settings.search_bm25_length == "words" else "octet_length(m.content)"
    async with session_scope() as session:
        terms = await fulltext.query_terms(session, query)
        rows = (await session.execute(text(
            f"SELECT m.id, {length_sql}, u.lexeme, coalesce(array_length(u.positions, 1), 1) "
            "FROM memories m LEFT JOIN LATERAL unnest(m.fts) u ON true "
            "WHERE m.org_id = :org AND m.user_id = :scope"), {"org": org_id, "scope": scope})).all()
    length = {r[0]: r[1] for r in rows}
    tf = {(r[0], r[2]): r[3] for r in rows}
    df = Counter(lexeme for (_, lexeme) in tf if lexeme in terms)
    matching = {row_id for (row_id, lexeme) in tf if lexeme in terms}
    avg = sum(length[r] for r in matching) / len(matching)
    k1, b = settings.search_bm25_k1, settings.search_bm25_b
    scores = {}
    for row_id in matching:
        score = 0.0
        for term in terms:
            count = tf.get((row_id, term), 0)
            if count:
                idf = math.log(1 + (len(length) - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * count * (k1 + 1) / (count + k1 * (1 - b + b * length[row_id] / avg))
        scores[row_id] = score
    return scores


async def _rank(org_id: uuid.UUID, scope: str, query: str, limit: int, n_scope: int):
    async with session_scope() as session:
        clauses = search_clauses(org_id, MemorySearchIn(query=query, user_id=scope))
        return await fulltext.bm25_ranking(session, query, clauses, limit, n_scope)


async def test_bm25_in_sql_equals_the_reference_computation(services, scope):
    tenant = await make_tenant("fulltext")
    await _insert(tenant.org_id, scope, CORPUS)
    query = "plumber fixing the kitchen sink on Tuesday"
    ranked = await _rank(tenant.org_id, scope, query, limit=10, n_scope=len(CORPUS))
    expected = await _reference(tenant.org_id, scope, query)
    assert {row_id for row_id, _ in ranked} == set(expected)
    for row_id, score in ranked:
        assert score == pytest.approx(expected[row_id], rel=1e-9)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


async def test_a_large_scope_is_matched_on_its_rare_words_and_keeps_the_best_rows(services, scope, monkeypatch):
    tenant = await make_tenant("fulltext-large")
    filler = [f"Note {i}: the weather report said rain in the morning." for i in range(300)]
    ids = await _insert(tenant.org_id, scope, filler + [
        "Zdravko the plumber said rain would not stop the repair.",
        "Zdravko called about the weather.",
    ])
    # Statistics as if 'rain' and 'weather' were in every row and 'zdravko' rare; a budget of 50 rows.
    stats = fulltext.TermStatistics({"rain": 0.99, "weather": 0.99}, floor=0.001, loaded_at=float("inf"))
    monkeypatch.setattr(fulltext, "_stats", {"memories": stats})
    monkeypatch.setattr(get_settings(), "search_text_match_budget", 50)
    query = "Zdravko rain weather"
    narrowed = await _rank(tenant.org_id, scope, query, limit=5, n_scope=len(ids))
    assert [ids[row_id].split()[0] for row_id, _ in narrowed] == ["Zdravko", "Zdravko"]
    exact = await _rank(tenant.org_id, scope, query, limit=2, n_scope=0)  # within budget: every word matched
    assert [row_id for row_id, _ in narrowed] == [row_id for row_id, _ in exact]


async def test_no_more_rows_than_the_budget_are_scored_when_even_the_rarest_word_is_common(services, scope,
                                                                                          monkeypatch):
    tenant = await make_tenant("fulltext-bound")
    ids = await _insert(tenant.org_id, scope, [f"Note {i}: rain in the morning." for i in range(120)])
    stats = fulltext.TermStatistics({"rain": 0.99, "morning": 0.99}, floor=0.001, loaded_at=float("inf"))
    monkeypatch.setattr(fulltext, "_stats", {"memories": stats})
    monkeypatch.setattr(get_settings(), "search_text_match_budget", 50)
    bounded = await _rank(tenant.org_id, scope, "rain in the morning", limit=1000, n_scope=len(ids))
    assert len(bounded) == 50 and all(score > 0 for _, score in bounded)
    exact = await _rank(tenant.org_id, scope, "rain in the morning", limit=1000, n_scope=0)  # within the budget
    assert len(exact) == len(ids)


async def test_hnsw_scan_settings_are_set_once_per_transaction_and_again_after_it():
    from pipelines.memories.search import prepare_hnsw

    async with session_scope() as session:
        calls = []
        original = session.execute

        async def counting(statement, *args, **kwargs):
            calls.append(str(statement))
            return await original(statement, *args, **kwargs)

        session.execute = counting
        await prepare_hnsw(session, 101)
        await prepare_hnsw(session, 60)  # the same transaction already scans deeper: nothing to do
        assert sum("set_config" in c for c in calls) == 1
        assert (await original(text("SHOW hnsw.ef_search"))).scalar_one() == "101"
        await prepare_hnsw(session, 300)  # deeper than set: set again
        assert (await original(text("SHOW hnsw.ef_search"))).scalar_one() == "300"
        await session.commit()  # the settings were local to that transaction
        await prepare_hnsw(session, 60)
        assert sum("set_config" in c for c in calls) == 3
        assert (await original(text("SHOW hnsw.iterative_scan"))).scalar_one() == "relaxed_order"
