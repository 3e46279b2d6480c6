"""pipelines/memories/extraction.py, the pure parts: cleaning the facts a model returns."""

from __future__ import annotations

from pipelines.memories.extraction import clean_facts
from schemas.memories import MAX_CONTENT_CHARS


def test_facts_are_stripped_blank_and_repeated_ones_dropped_in_order():
    assert clean_facts(["  Lives in  Paris ", "", "   ", "Lives in Paris", "Likes tea"], 10) == [
        "Lives in Paris", "Likes tea"]


def test_at_most_the_limit_of_facts_is_kept_each_within_the_memory_size_limit():
    facts = clean_facts([f"fact {i}" for i in range(10)] + ["x" * (MAX_CONTENT_CHARS + 5)], 3)
    assert facts == ["fact 0", "fact 1", "fact 2"]
    assert len(clean_facts(["x" * (MAX_CONTENT_CHARS + 5)], 3)[0]) == MAX_CONTENT_CHARS
