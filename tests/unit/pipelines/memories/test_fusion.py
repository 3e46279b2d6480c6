"""Adaptive convex fusion: each side's weight follows how decisive its scores are for the query."""

from __future__ import annotations

import uuid

from pipelines.memories.fusion import Hit, decisiveness, fuse_scores

IDS = [uuid.UUID(int=i) for i in range(1, 9)]


def vector_list(scores: list[float]) -> list[Hit]:
    return [Hit(m, vector_score=s, vector_rank=i + 1) for i, (m, s) in enumerate(zip(IDS, scores, strict=False))]


def text_list(order: list[int], scores: list[float]) -> list[Hit]:
    return [Hit(IDS[m], text_score=s, text_rank=i + 1) for i, (m, s) in enumerate(zip(order, scores, strict=True))]


def test_decisiveness_is_the_best_candidates_standard_score():
    flat = {IDS[i]: 0.0 for i in range(4)} | {IDS[4]: 0.1}
    assert decisiveness({IDS[0]: 3.0, IDS[1]: -1.0}) == 3.0
    assert decisiveness(flat) == 0.1  # never zero: a side keeps some weight
    assert decisiveness({}) == 0.1


def test_a_side_whose_best_stands_far_out_counts_more_when_fusion_adapts():
    # Meaning is flat (a query of common words); the text side has one memory far above the rest (a rare name).
    vector = vector_list([0.52, 0.51, 0.50, 0.50, 0.49, 0.49, 0.48, 0.48])
    textual = text_list([5, 0, 1, 2, 3, 4, 6, 7], [9.0, 1.0, 1.0, 0.9, 0.9, 0.8, 0.8, 0.8])
    fixed = fuse_scores(vector, textual, 1.0, 0.25)
    assert fixed[0].id == IDS[0]  # with a fixed low text weight, the first by meaning stays first
    adapted = fuse_scores(vector, textual, 1.0, 0.25, adapt=4.0)
    assert adapted[0].id == IDS[5]


def test_without_adapting_the_weights_are_the_given_ones():
    vector = vector_list([0.9, 0.5, 0.4])
    textual = text_list([1, 0], [3.0, 1.0])
    assert [(h.id, h.fused_score) for h in fuse_scores(vector, textual, 1.0, 0.5)] == \
        [(h.id, h.fused_score) for h in fuse_scores(vector, textual, 1.0, 0.5, adapt=0.0)]
