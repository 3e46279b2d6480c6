"""One search pipeline, two tables: each corpus's statements read its own table, and its statistics and
sizes are its own."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.dialects import postgresql

from pipelines.conversations.search import MESSAGES
from pipelines.memories import fulltext
from pipelines.memories.corpus import MEMORIES
from pipelines.memories.search import vector_statement

ORG = uuid.UUID(int=7)


def sql(statement) -> str:
    return str(statement.compile(dialect=postgresql.dialect()))


def test_org_clauses_are_the_organizations_live_rows_of_the_corpus_table():
    for corpus in (MEMORIES, MESSAGES):
        assert [sql(c) for c in corpus.org_clauses(ORG)][:2] == [f"{corpus.name}.org_id = %(org_id_1)s::UUID",
                                                                 f"{corpus.name}.deleted_at IS NULL"]
    # Memories may expire: one past its expires_at is no longer live.
    assert [sql(c) for c in MEMORIES.org_clauses(ORG)][2:] == [
        "memories.expires_at IS NULL OR memories.expires_at > now()"]
    assert len(MESSAGES.org_clauses(ORG)) == 2
    assert (MEMORIES.name, MESSAGES.name) == ("memories", "messages")
    assert sql(MESSAGES.fts) == "messages.fts"


def test_a_vector_statement_reads_only_its_corpus_table():
    # A small scope (n_scope within search_exact_max): the exact scan, which needs no session.
    for corpus, other in ((MEMORIES, "messages"), (MESSAGES, "memories")):
        text = sql(asyncio.run(vector_statement(None, [0.1, 0.2], corpus.org_clauses(ORG), 5, 3, corpus=corpus)))
        assert f"FROM {corpus.name}" in text and f"{corpus.name}.embedding IS NOT NULL" in text
        assert other not in text
    # Memories record their vectors' model: a query is compared only with vectors of the model that embedded it.
    text = sql(asyncio.run(vector_statement(None, [0.1, 0.2], MEMORIES.org_clauses(ORG), 5, 3, corpus=MEMORIES)))
    assert "memories.embedding_model = " in text


class StatsSession:
    """Answers the pg_stats query with a table's own lexeme frequencies; counts the queries."""

    def __init__(self) -> None:
        self.tables: list[str] = []

    async def execute(self, statement, params):
        self.tables.append(params["table"])
        rows = {"memories": (["rain"], [0.5, 0.5, 0.5, 0.0]), "messages": (["hello"], [0.9, 0.9, 0.9, 0.0])}

        class Result:
            def first(self):
                return rows[params["table"]]
        return Result()


def test_term_statistics_are_kept_per_table(monkeypatch):
    monkeypatch.setattr(fulltext, "_stats", {})
    session = StatsSession()
    memories = asyncio.run(fulltext.term_statistics(session))
    messages = asyncio.run(fulltext.term_statistics(session, MESSAGES))
    assert (memories.frequency("rain"), memories.frequency("hello")) == (0.5, 0.5)
    assert (messages.frequency("hello"), messages.frequency("rain")) == (0.9, 0.9)
    asyncio.run(fulltext.term_statistics(session, MESSAGES))  # cached: not read again
    assert session.tables == ["memories", "messages"]


class CountingSession:
    def __init__(self, rows: int) -> None:
        self.rows, self.statements = rows, []

    async def execute(self, statement):
        self.statements.append(sql(statement))
        rows = self.rows

        class Result:
            def scalar_one(self) -> int:
                return rows
        return Result()


def test_an_organizations_size_is_counted_and_cached_per_table(monkeypatch):
    monkeypatch.setattr(fulltext, "_org_sizes", {})
    session = CountingSession(rows=50_000)
    assert asyncio.run(fulltext.scope_size(session, ORG, [], 10_000, whole_org=True)) == (50_000, False)
    assert asyncio.run(fulltext.scope_size(session, ORG, [], 10_000, whole_org=True, corpus=MESSAGES)) == \
        (50_000, False)
    # Each table was counted once, from itself; the memories' count does not stand for the messages'.
    assert len(session.statements) == 2
    assert "FROM memories" in session.statements[0] and "FROM messages" in session.statements[1]
    assert set(fulltext._org_sizes) == {("memories", ORG), ("messages", ORG)}


def test_during_a_switch_of_dimension_the_old_models_query_reads_the_vectors_kept_aside():
    text = sql(asyncio.run(vector_statement(None, [0.1, 0.2], MEMORIES.org_clauses(ORG), 5, 3, corpus=MEMORIES,
                                            model="old-model", prev=True)))
    assert "memories.embedding_prev <=> " in text and "memories.embedding_prev IS NOT NULL" in text
    assert "memories.embedding_model_prev = " in text
    assert "memories.embedding <=>" not in text and "memories.embedding_model =" not in text
