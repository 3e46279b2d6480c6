"""Choosing which words a text search matches on: rarest first, within the budget, never none."""

from __future__ import annotations

from pipelines.fulltext import TermStatistics, match_terms

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
