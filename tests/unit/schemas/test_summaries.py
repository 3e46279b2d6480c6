"""schemas/summaries.py: one source (a run or chosen memories), bounded lists and budgets."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from schemas.summaries import MAX_SUMMARY_SOURCES, SummaryCreate, SummaryMode


def test_a_run_with_defaults():
    body = SummaryCreate(run_id="run-1")
    assert body.mode is SummaryMode.AUTO and body.memory_ids is None
    assert body.max_sentences is None and body.target_chars is None


def test_memory_ids_are_deduplicated_in_order():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert SummaryCreate(memory_ids=[a, b, a]).memory_ids == [a, b]


@pytest.mark.parametrize("body", [
    {},
    {"run_id": "run-1", "memory_ids": [str(uuid.uuid4())]},
    {"memory_ids": []},
    {"memory_ids": [str(uuid.uuid4())], "user_id": "alice"},
    {"memory_ids": [str(uuid.uuid4())], "agent_id": "bot"},
    {"run_id": "run-1", "mode": "creative"},
    {"run_id": "run-1", "max_sentences": 0},
    {"run_id": "run-1", "target_chars": 10},
    {"run_id": "run-1", "target_chars": 20_001},
    {"run_id": " "},
    {"run_id": "run-1", "unknown": True},
    {"memory_ids": ["not-a-uuid"]},
], ids=["nothing", "both", "empty-ids", "ids-with-user", "ids-with-agent", "bad-mode", "zero-sentences",
        "tiny-target", "huge-target", "blank-run", "extra-field", "bad-uuid"])
def test_invalid_bodies_are_refused(body):
    with pytest.raises(ValidationError):
        SummaryCreate.model_validate(body)


def test_at_most_max_sources_memory_ids():
    SummaryCreate(memory_ids=[uuid.uuid4() for _ in range(MAX_SUMMARY_SOURCES)])
    with pytest.raises(ValidationError):
        SummaryCreate(memory_ids=[uuid.uuid4() for _ in range(MAX_SUMMARY_SOURCES + 1)])


def test_a_run_may_be_narrowed_by_user_and_agent():
    body = SummaryCreate(run_id="run-1", user_id="alice", agent_id="bot", mode="extractive", max_sentences=3,
                         target_chars=500)
    assert (body.user_id, body.agent_id, body.mode) == ("alice", "bot", SummaryMode.EXTRACTIVE)
