"""Fusing the vector and text candidate lists: reciprocal ranks, and standardized scores."""

from __future__ import annotations

import math
import uuid

import pytest

from pipelines.memories.feedback import feedback_settings, refine
from pipelines.memories.fusion import Hit, fuse_ranks, fuse_scores
from schemas.search import MemorySearchIn

A, B, C, D = (uuid.UUID(int=i) for i in range(1, 5))


def vector_list(*scored: tuple[uuid.UUID, float]) -> list[Hit]:
    return [Hit(m, vector_score=s, vector_rank=i + 1) for i, (m, s) in enumerate(scored)]


def text_list(*scored: tuple[uuid.UUID, float]) -> list[Hit]:
    return [Hit(m, text_score=s, text_rank=i + 1) for i, (m, s) in enumerate(scored)]


def test_a_memory_far_ahead_by_meaning_beats_one_that_only_leads_the_words():
    # A is far above the rest by meaning; B leads the text list only narrowly.
    vector = vector_list((A, 0.90), (B, 0.40), (C, 0.38), (D, 0.37))
    textual = text_list((B, 5.1), (A, 5.0), (C, 1.0))
    by_scores = fuse_scores(vector, textual, 1.0, 1.0)
    assert by_scores[0].id == A
    # Reciprocal ranks see only positions: first and second on each side tie, broken by id.
    by_ranks = fuse_ranks(vector, textual, 1.0, 1.0, 60)
    assert by_ranks[0].fused_score == by_ranks[1].fused_score


def test_a_memory_missing_from_one_side_gets_that_sides_lowest():
    vector = vector_list((A, 0.9), (B, 0.5))
    textual = text_list((C, 3.0), (A, 1.0))
    fused = {h.id: h for h in fuse_scores(vector, textual, 1.0, 1.0)}
    # B is last by meaning and absent by words, so it is last; C has only its text score.
    assert min(fused.values(), key=lambda h: h.fused_score).id == B
    assert fused[C].vector_rank is None and fused[C].text_rank == 1


def test_scores_are_in_the_unit_interval_and_weights_shift_the_order():
    vector = vector_list((A, 0.9), (B, 0.8), (C, 0.1))
    textual = text_list((C, 9.0), (B, 4.0), (A, 0.5))
    meaning = fuse_scores(vector, textual, 1.0, 0.1)
    words = fuse_scores(vector, textual, 0.1, 1.0)
    assert meaning[0].id == A and words[0].id == C
    assert all(0 < h.fused_score < 1 for h in meaning + words)


def test_one_empty_side_ranks_by_the_other():
    vector = vector_list((A, 0.9), (B, 0.5), (C, 0.2))
    assert [h.id for h in fuse_scores(vector, [], 1.0, 0.25)] == [A, B, C]


def test_refine_adds_the_weighted_mean_of_the_feedback_and_normalizes():
    query = [1.0, 0.0, 0.0]
    refined = refine(query, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], weight=2.0)
    # [1, 0, 0] + 2 × [0, 0.5, 0.5] = [1, 1, 1], normalized.
    assert refined == pytest.approx([1 / math.sqrt(3)] * 3)
    assert refine(query, [[0.0, 1.0, 0.0]], weight=0.0) == pytest.approx(query)


def test_contrast_subtracts_what_the_best_hits_share_with_every_candidate():
    query = [1.0, 0.0, 0.0]
    topic = [0.0, 1.0, 0.0]  # the conversation's own subject: every candidate has it
    best = [[0.0, 0.6, 0.8]]  # mostly the detail, partly the topic every candidate shares
    pool = [topic, topic, [0.0, 0.6, 0.8]]
    plain = refine(query, best, weight=1.0)
    contrasted = refine(query, best, weight=1.0, pool=pool, contrast=1.0)
    # The pool's mean is [0, 0.8667, 0.2667]: subtracted, the topic pulls away and the detail remains.
    assert contrasted[1] < 0 < plain[1]
    assert contrasted[2] > 0 and contrasted[2] / contrasted[0] == pytest.approx(0.5333, abs=1e-3)
    assert refine(query, best, weight=1.0, pool=pool, contrast=0.0) == pytest.approx(plain)


@pytest.mark.parametrize("body, expected", [
    ({}, (10, 0.5, 1.0)),                                      # hybrid: on by default, with contrast
    ({"feedback": True}, (10, 0.5, 1.0)),                      # the service's docs, weight and contrast
    ({"mode": "vector"}, None),                                # vector: plain nearest neighbours
    ({"mode": "vector", "feedback": True}, (10, 0.5, 1.0)),
    ({"feedback": False}, None),
    ({"feedback": {"docs": 3}}, (3, 0.5, 1.0)),
    ({"mode": "vector", "feedback": {"weight": 1.5}}, (10, 1.5, 1.0)),
    ({"feedback": {"contrast": 0}}, (10, 0.5, 0.0)),           # plain Rocchio, without the negative term
    ({"feedback": {"weight": 0}}, None),                       # nothing to add
    ({"mode": "text"}, None),
])
def test_feedback_is_on_in_hybrid_by_default_and_configurable_per_request(body, expected):
    assert feedback_settings(MemorySearchIn(query="q", **body)) == expected


def test_the_feedback_setting_turns_it_off_for_hybrid_unless_asked(monkeypatch):
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "search_feedback", False)
    assert feedback_settings(MemorySearchIn(query="q")) is None
    assert feedback_settings(MemorySearchIn(query="q", feedback=True)) == (10, 0.5, 1.0)
    assert feedback_settings(MemorySearchIn(query="q", mode="vector")) is None


def test_text_mode_refuses_feedback_it_cannot_use():
    with pytest.raises(ValueError, match="text"):
        MemorySearchIn(query="q", mode="text", feedback=True)


def test_a_bad_feedback_object_gets_one_error_naming_its_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        MemorySearchIn(query="q", feedback={"docs": 0})
    [error] = caught.value.errors()
    assert error["loc"][-1] == "docs" and error["type"] == "greater_than_equal"
