"""schemas/search.py: what a search accepts — modes, weights, structured filters, bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.search import MAX_FILTER_NODES, MAX_QUERY_CHARS, MemorySearchIn


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple]:
    return {tuple(e["loc"]) for e in exc.value.errors()}


def test_memory_search_in_defaults_to_ten_hits_and_no_score_floor():
    search = MemorySearchIn.model_validate({"query": "tea"})
    assert search.top_k == 10
    assert search.min_score is None


@pytest.mark.parametrize("top_k", [1, 100])
def test_memory_search_in_accepts_top_k_at_its_bounds(top_k):
    assert MemorySearchIn.model_validate({"query": "tea", "top_k": top_k}).top_k == top_k


@pytest.mark.parametrize("top_k", [0, -1, 101])
def test_memory_search_in_rejects_top_k_outside_1_to_100(top_k):
    with pytest.raises(ValidationError) as exc:
        MemorySearchIn.model_validate({"query": "tea", "top_k": top_k})
    assert error_locs(exc) == {("top_k",)}


@pytest.mark.parametrize("min_score", [-1.0, 0.0, 1.0])
def test_memory_search_in_accepts_min_score_within_cosine_range(min_score):
    assert MemorySearchIn.model_validate({"query": "tea", "min_score": min_score}).min_score == min_score


@pytest.mark.parametrize("min_score", [-1.01, 1.01, 2])
def test_memory_search_in_rejects_min_score_outside_cosine_range(min_score):
    with pytest.raises(ValidationError) as exc:
        MemorySearchIn.model_validate({"query": "tea", "min_score": min_score})
    assert error_locs(exc) == {("min_score",)}


@pytest.mark.parametrize("query", ["", "q" * (MAX_QUERY_CHARS + 1)])
def test_memory_search_in_rejects_empty_or_overlong_query(query):
    with pytest.raises(ValidationError) as exc:
        MemorySearchIn.model_validate({"query": query})
    assert error_locs(exc) == {("query",)}


def test_memory_search_in_defaults_to_hybrid_mode():
    assert MemorySearchIn.model_validate({"query": "tea"}).mode == "hybrid"


def test_filters_accept_nested_and_or_groups_of_conditions():
    search = MemorySearchIn.model_validate({"query": "tea", "filters": {"AND": [
        {"field": "metadata.topic", "op": "in", "value": ["food", "drink"]},
        {"OR": [{"field": "created_at", "op": "gte", "value": "2026-01-01T00:00:00+00:00"},
                {"field": "metadata.score", "op": "gt", "value": 3}]}]}})
    assert search.filters.size() == 5  # two groups, three conditions


@pytest.mark.parametrize("condition", [
    {"field": "content", "op": "eq", "value": "x"},                       # not a filterable field
    {"field": "metadata.a;drop", "op": "eq", "value": "x"},               # key outside the safe alphabet
    {"field": "metadata.topic", "op": "in", "value": "food"},             # `in` needs a list
    {"field": "metadata.topic", "op": "gt", "value": {"a": 1}},           # ranges compare scalars
    {"field": "created_at", "op": "contains", "value": "2026"},          # dates don't `contain`
    {"field": "created_at", "op": "gt", "value": "yesterday"},           # dates must be ISO 8601
])
def test_filters_reject_conditions_that_cannot_be_compiled_safely(condition):
    with pytest.raises(ValidationError):
        MemorySearchIn.model_validate({"query": "tea", "filters": condition})


def test_a_filter_group_needs_exactly_one_of_and_or():
    with pytest.raises(ValidationError):
        MemorySearchIn.model_validate({"query": "tea", "filters": {"AND": [
            {"field": "user_id", "op": "eq", "value": "a"}], "OR": [{"field": "user_id", "op": "eq", "value": "b"}]}})


def test_filters_are_bounded_in_size():
    leaf = {"field": "user_id", "op": "eq", "value": "a"}
    nested = {"AND": [{"OR": [leaf] * 10} for _ in range(MAX_FILTER_NODES // 10)]}
    with pytest.raises(ValidationError):
        MemorySearchIn.model_validate({"query": "tea", "filters": nested})
