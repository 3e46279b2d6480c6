"""pipelines/splitting.py: sentences of conversation text, and chunks under a character budget."""

from __future__ import annotations

import pytest

from pipelines.splitting import chunk_by_chars, split_long, split_sentences, truncate


@pytest.mark.parametrize("text, expected", [
    ("I moved to Lisbon. My sister lives there too! Do you like it?",
     ["I moved to Lisbon.", "My sister lives there too!", "Do you like it?"]),
    ("Dr. Smith met Mr. Jones at 3.30 p.m. on Friday. They agreed.",
     ["Dr. Smith met Mr. Jones at 3.30 p.m. on Friday.", "They agreed."]),
    ("Bring fruit, e.g. apples or pears. Then we leave.", ["Bring fruit, e.g. apples or pears.", "Then we leave."]),
    ("J. R. R. Tolkien wrote it. So did I. Then we left.",
     ["J. R. R. Tolkien wrote it.", "So did I.", "Then we left."]),
    ("See No. 5 on the list. I said no. Fine.", ["See No. 5 on the list.", "I said no.", "Fine."]),
    ("Acme Inc. announced it. We met at Acme Inc. Today we sign.",
     ["Acme Inc. announced it.", "We met at Acme Inc.", "Today we sign."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("i went home. then i slept", ["i went home.", "then i slept"]),
    ("Well... I guess so. I was thinking... maybe not.", ["Well...", "I guess so.", "I was thinking... maybe not."]),
    ("Pi is 3.14159 roughly. Version 2.0 shipped.", ["Pi is 3.14159 roughly.", "Version 2.0 shipped."]),
    ("no punctuation at all", ["no punctuation at all"]),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_breaks_at_paragraphs_list_items_and_speaker_turns():
    text = ("User: can you book the flight\nAssistant: Sure, which day\n\nThe plan:\n- pack on Monday\n"
            "- leave on Tuesday\nwrapped line continues here.")
    assert split_sentences(text) == ["User: can you book the flight", "Assistant: Sure, which day", "The plan:",
                                     "- pack on Monday", "- leave on Tuesday wrapped line continues here."]


def test_split_sentences_collapses_whitespace_and_drops_empty_pieces():
    assert split_sentences("  One   two.\t\tThree.  \n\n \n ") == ["One two.", "Three."]
    assert split_sentences("   ") == []


def test_split_long_cuts_at_spaces_and_keeps_every_word():
    text = " ".join(f"word{i}" for i in range(50))
    pieces = split_long(text, 40)
    assert all(len(p) <= 40 for p in pieces) and len(pieces) > 1
    assert " ".join(pieces) == text


def test_split_long_cuts_an_unbroken_word_hard():
    assert split_long("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_chunk_by_chars_fills_chunks_in_order_within_the_budget():
    lengths = [4, 4, 4, 10, 1, 1]
    chunks = chunk_by_chars(lengths, budget=10)
    assert chunks == [[0, 1], [2], [3], [4, 5]]  # 4+1+4 = 9; adding 4 more would be 14
    assert [i for c in chunks for i in c] == list(range(len(lengths)))
    for chunk in chunks:
        assert sum(lengths[i] for i in chunk) + len(chunk) - 1 <= 10


def test_chunk_by_chars_gives_an_oversized_item_a_chunk_of_its_own():
    assert chunk_by_chars([3, 50, 3], budget=10) == [[0], [1], [2]]
    assert chunk_by_chars([], budget=10) == []


def test_truncate_cuts_at_a_word_boundary_with_an_ellipsis():
    text = "The quick brown fox jumps over the lazy dog"
    cut = truncate(text, 20)
    assert len(cut) <= 20 and cut.endswith("…") and text.startswith(cut[:-1])
    assert truncate(text, 100) == text
