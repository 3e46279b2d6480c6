"""A switch of dimension: each query vector goes to the column of its dimension, and a switch to yet another
dimension is refused while one is unfinished."""

from __future__ import annotations

import pytest

from core import embedding_columns
from core.embedding_columns import ColumnState
from core.errors import PermanentJobError
from pipelines.memories import search
from pipelines.memories.corpus import MEMORIES


async def test_a_switch_to_yet_another_dimension_is_refused_before_any_ddl(monkeypatch):
    async def half_switched() -> dict[str, ColumnState]:
        return {t: ColumnState(768, 384) for t in embedding_columns.TABLES}

    async def no_ddl(*args):
        raise AssertionError("no DDL for a refused switch")

    monkeypatch.setattr(embedding_columns, "states", half_switched)
    monkeypatch.setattr(embedding_columns, "_move_aside", no_ddl)
    monkeypatch.setattr(embedding_columns, "_ensure_index", no_ddl)
    with pytest.raises(PermanentJobError) as refused:
        await embedding_columns.begin(1024)
    assert refused.value.code == "embedding_dim_change" and "Switching embedding models" in str(refused.value)


@pytest.mark.parametrize(("state", "current", "expected"), [
    (ColumnState(384), 384, [(384, None, False), (384, "old", False)]),  # same dimension: both read `embedding`
    (ColumnState(768, 384), 768, [(768, None, False), (384, "old", True)]),  # a switch under way: old ones aside
    (ColumnState(384), 768, [(384, "old", False)]),  # configured for 768, the switch not yet begun
    (ColumnState(768), 768, [(768, None, False)]),  # the switch over, the previous model still configured
])
async def test_each_query_vector_goes_to_the_column_of_its_dimension(monkeypatch, state, current, expected):
    async def column_state(session, table):
        assert table == "memories"
        return state

    monkeypatch.setattr(embedding_columns, "column_state", column_state)
    monkeypatch.setattr(search.get_settings(), "embedding_previous_model", "old")
    got = await search._switch_queries(None, MEMORIES, [0.0] * current, [0.0] * 384)
    assert [(len(v), model, prev) for v, model, prev in got] == expected
