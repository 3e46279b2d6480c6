"""The offline merge of `consolidate`: the longest text that says all the survivor says, and only what it covers."""

from __future__ import annotations

import uuid

from pipelines.maintenance.consolidate import offline_merge
from schemas.tables import Memory


def memory(content: str) -> Memory:
    return Memory(id=uuid.uuid4(), org_id=uuid.uuid4(), content=content, content_hash="h")


def test_the_longest_covering_text_is_kept_and_what_it_covers_merged():
    oldest = memory("The dog is called Rex")
    longer, repeat = memory("The dog is called Rex and he is a beagle"), memory("the dog is called Rex.")
    text, merged = offline_merge(oldest, [longer, repeat])
    assert text == longer.content and merged == [longer, repeat]


def test_a_negation_or_a_number_is_never_merged_away():
    oldest = memory("The dog is called Rex")
    assert offline_merge(oldest, [memory("The dog is not called Rex")]) is None
    assert offline_merge(oldest, [memory("The dog is called Rex and is 3 years old")]) is None


def test_a_text_that_covers_the_survivor_but_not_another_candidate_leaves_that_one():
    oldest = memory("Alice likes tea")
    green, herbal = memory("Alice likes green tea"), memory("Alice likes herbal tea in winter")
    text, merged = offline_merge(oldest, [green, herbal])
    assert text == herbal.content and merged == [herbal]
