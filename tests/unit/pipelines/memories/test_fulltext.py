"""Choosing which words a text search matches on: rarest first, within the budget, never none."""

from __future__ import annotations

from pipelines.memories.fulltext import TermStatistics, match_terms

STATS = TermStatistics({"common": 0.30, "usual": 0.05, "uncommon": 0.01}, floor=0.001, loaded_at=0.0)


def test_a_word_missing_from_the_statistics_counts_as_rarer_than_any_listed():
    assert STATS.frequency("zdravko") == 0.001
    assert STATS.frequency("common") == 0.30


def test_a_small_scope_matches_on_every_word():
    assert sorted(match_terms(["common", "usual", "zdravko"], STATS, n_scope=500, budget=2000)) == \
        ["common", "usual", "zdravko"]


def test_a_large_scope_matches_on_the_rarest_words_that_fit_the_budget():
    # 100,000 rows: zdravko ~100, uncommon ~1,000, usual ~5,000, common ~30,000 expected matches.
    chosen = match_terms(["common", "usual", "uncommon", "zdravko"], STATS, n_scope=100_000, budget=2000)
    assert chosen == ["zdravko", "uncommon"]


def test_the_rarest_word_is_matched_even_when_it_alone_exceeds_the_budget():
    assert match_terms(["common", "usual"], STATS, n_scope=1_000_000, budget=2000) == ["usual"]


def test_without_statistics_every_word_is_matched():
    empty = TermStatistics({}, floor=0.0, loaded_at=0.0)
    assert sorted(match_terms(["a", "b", "c"], empty, n_scope=10**7, budget=10)) == ["a", "b", "c"]


class CountingSession:
    """Answers every count with `rows`; remembers how many statements it ran."""

    def __init__(self, rows: int) -> None:
        self.rows, self.statements = rows, 0

    async def execute(self, statement):
        self.statements += 1
        rows = self.rows

        class Result:
            def scalar_one(self) -> int:
                return rows
        return Result()


def test_a_whole_organization_search_reuses_its_recent_count_and_a_narrower_one_counts(monkeypatch):
    import asyncio
    import uuid

    from pipelines.memories import fulltext

    monkeypatch.setattr(fulltext, "_org_sizes", {})
    org = uuid.uuid4()
    session = CountingSession(rows=50_000)
    # First search: the organization is counted once, and is larger than the cap: no capped count.
    assert asyncio.run(fulltext.scope_size(session, org, [], 10_000, whole_org=True)) == (50_000, False)
    assert session.statements == 1
    # Within the minute neither kind of search of the whole organization counts again.
    assert asyncio.run(fulltext.scope_size(session, org, [], 10_000, whole_org=True)) == (50_000, False)
    assert asyncio.run(fulltext.scope_size(session, org, [], 2_000, estimate=False, whole_org=True)) == (2_001, False)
    assert session.statements == 1
    # A narrower scope always is counted, up to the cap.
    small = CountingSession(rows=40)
    assert asyncio.run(fulltext.scope_size(small, org, [], 10_000)) == (40, True)
    assert small.statements == 1
    # So is a small organization: its size fits the cap, and the exact count decides.
    monkeypatch.setattr(fulltext, "_org_sizes", {("memories", org): (500, fulltext.time.monotonic())})
    assert asyncio.run(fulltext.scope_size(small, org, [], 10_000, whole_org=True)) == (40, True)
    assert small.statements == 2


def test_a_stale_organization_size_is_served_while_it_is_recounted_in_the_background(monkeypatch):
    import asyncio
    import uuid

    from pipelines.memories import fulltext

    org = uuid.uuid4()
    monkeypatch.setattr(fulltext, "_org_sizes", {("memories", org): (30_000, fulltext.time.monotonic() - 3600)})
    monkeypatch.setattr(fulltext, "_refreshing", {})
    recounted = asyncio.Event()

    async def refresh(corpus, org_id):
        fulltext._org_sizes[corpus.name, org_id] = (31_000, fulltext.time.monotonic())
        fulltext._refreshing.pop((corpus.name, org_id), None)
        recounted.set()

    monkeypatch.setattr(fulltext, "_refresh_org_size", refresh)

    async def main():
        session = CountingSession(rows=0)
        first = await fulltext.org_size(session, org)
        again = await fulltext.org_size(session, org)  # the refresh is already in flight: not started twice
        await asyncio.wait_for(recounted.wait(), 5)
        return first, again, await fulltext.org_size(session, org), session.statements

    assert asyncio.run(main()) == (30_000, 30_000, 31_000, 0)
