"""pipelines/memories/dedup.py: near duplicates need similar embeddings AND nothing new said.

The similarities quoted are all-MiniLM-L6-v2's, measured when `dedup_similarity` was tuned: each of
these contradictions scores above the 0.95 threshold, so the lexical test is what keeps them apart.
"""

from __future__ import annotations

import math

import pytest

from pipelines.memories.dedup import (
    Scope,
    earlier_duplicates,
    near_duplicate,
    says_nothing_new,
    words,
)

THRESHOLD = 0.95


@pytest.mark.parametrize("new, stored, similarity", [
    ("I live in Paris", "I live in Paris.", 0.975),
    ("i live in paris", "I live in Paris", 1.0),
    ("I'm allergic to peanuts", "I am allergic to peanuts", 0.966),
    ("Is vegetarian", "Is a vegetarian", 0.988),
    ("I love hiking", "I really love hiking", 0.978),
    ("Birthday is March 3", "Birthday is on March 3", 0.973),
])
def test_a_repeat_that_says_nothing_new_is_a_near_duplicate(new, stored, similarity):
    assert near_duplicate(new, stored, similarity, THRESHOLD)


@pytest.mark.parametrize("new, stored, similarity", [
    ("I am not allergic to peanuts", "I am allergic to peanuts", 0.970),   # negation added
    ("I am allergic to peanuts", "I am not allergic to peanuts", 0.970),   # negation dropped
    ("I don't eat meat", "I do eat meat", 0.96),
    ("Has a meeting on Tuesday at 10", "Has a meeting on Monday at 10", 0.967),  # a word replaced
    ("Prefers coffee over tea", "Prefers tea over coffee", 0.995),          # reordered
    ("I have three cats", "I have two cats", 0.946),
    ("Meeting at 3", "Meeting at 3 or 4", 0.96),                            # a number added
    ("Lives in Paris", "Used to live in Paris", 0.96),                      # a past state
    ("I really love hiking", "I love hiking", 0.978),                       # says more than the stored one
])
def test_a_contradiction_or_new_detail_is_never_a_near_duplicate(new, stored, similarity):
    assert not near_duplicate(new, stored, similarity, THRESHOLD)


def test_below_the_threshold_nothing_is_a_near_duplicate():
    assert says_nothing_new("Likes cats", "Likes cats")
    assert not near_duplicate("Likes cats", "Likes cats", 0.94, THRESHOLD)


def test_words_ignore_case_punctuation_articles_and_contractions():
    assert words("The user's NAME isn't Maria!") == ["user's", "name", "is", "not", "maria"]
    assert words("I can't, won’t") == ["i", "can", "not", "will", "not"]


def unit(*xs):
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def test_earlier_duplicates_compare_within_a_scope_with_kept_texts_only():
    alice, bob = Scope("alice"), Scope("bob")
    contents = ["Lives in Paris", "Lives in Paris", "Lives in Paris", "lives in paris.", "Likes tea"]
    vectors = [unit(1, 0), unit(1, 0), unit(1, 0), unit(1, 0.01), unit(0, 1)]
    scopes = [alice, alice, bob, alice, alice]
    assert earlier_duplicates(contents, vectors, scopes, THRESHOLD) == {
        1: (0, "exact", 1.0), 3: (0, "near", pytest.approx(1.0, abs=1e-3))}


def test_earlier_duplicates_skip_texts_already_known_as_duplicates():
    contents = ["Lives in Paris", "Lives in Paris"]
    vectors = [unit(1, 0), unit(1, 0)]
    # Text 0 repeats a stored memory: it is not kept, so text 1 is not matched against it.
    assert earlier_duplicates(contents, vectors, [Scope("a")] * 2, THRESHOLD, skip=[True, False]) == {}


def test_scope_of_a_payload_item_and_its_values():
    scope = Scope.of({"user_id": "u", "agent_id": None, "run_id": "r", "content": "x"})
    assert scope == Scope("u", None, "r")
    assert scope.as_dict() == {"user_id": "u", "agent_id": None, "run_id": "r"}
