"""Whether a search is narrower than its organization (which decides whether its size is counted)."""

from __future__ import annotations

import pytest

from pipelines.memories.filters import narrowing_clauses
from schemas.search import MemorySearchIn


def test_a_bare_query_searches_the_whole_organization():
    assert not narrowing_clauses(MemorySearchIn(query="q"))
    assert not narrowing_clauses(MemorySearchIn(query="q", metadata={}))  # an empty match narrows nothing


@pytest.mark.parametrize("narrowing", [
    {"user_id": "u"}, {"agent_id": "a"}, {"run_id": "r"}, {"metadata": {"topic": "x"}},
    {"created_after": "2026-01-01T00:00:00Z"}, {"created_before": "2026-01-01T00:00:00Z"},
    {"filters": {"field": "metadata.topic", "op": "eq", "value": "x"}},
])
def test_any_scope_metadata_time_or_filter_narrows_it(narrowing):
    assert narrowing_clauses(MemorySearchIn(query="q", **narrowing))
