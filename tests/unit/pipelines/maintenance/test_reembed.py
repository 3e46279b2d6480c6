"""`reembed` refuses a model of another dimension than the column's before it touches a row."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from core.errors import PermanentJobError
from pipelines.maintenance import reembed


async def test_another_dimension_than_the_columns_is_refused_up_front(monkeypatch):
    async def column_of_768() -> int:
        return 768

    monkeypatch.setattr(reembed, "column_dimensions", column_of_768)
    ctx = SimpleNamespace(job=SimpleNamespace(org_id=uuid.uuid4()))
    with pytest.raises(PermanentJobError) as refused:
        await reembed.reembed(ctx, reembed.ReembedParams())
    assert refused.value.code == "embedding_dim_change" and "Switching embedding models" in str(refused.value)
