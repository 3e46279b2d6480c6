"""Splitting long memories into passages: sentence-packed, overlapping, bounded."""

from __future__ import annotations

from pipelines.memories.passages import split_passages

SENTENCES = [f"Sentence number {i} says something about topic {i % 7}." for i in range(60)]
TEXT = " ".join(SENTENCES)


def test_a_short_memory_is_one_passage_of_itself():
    assert split_passages("I like tea.", size=100) == ["I like tea."]


def test_passages_are_whole_sentences_within_the_size_and_cover_everything():
    passages = split_passages(TEXT, size=300, overlap=60, most=100)
    assert len(passages) > 1 and all(len(p) <= 300 for p in passages)
    for sentence in SENTENCES:
        assert any(sentence in p for p in passages)
    assert passages[-1].endswith(SENTENCES[-1])


def test_each_passage_starts_with_the_last_sentence_of_the_one_before():
    passages = split_passages(TEXT, size=300, overlap=60, most=100)
    for before, after in zip(passages, passages[1:], strict=False):
        last = before.rsplit(". ", 1)[-1]
        assert after.startswith(last)


def test_code_lines_split_and_overlong_lines_are_cut():
    code = "\n".join(f"    value_{i} = compute(value_{i - 1}, factor={i})" for i in range(1, 80))
    passages = split_passages(code, size=400, overlap=80, most=100)
    assert all(len(p) <= 400 for p in passages) and "value_79" in passages[-1]
    unbroken = "x" * 1000
    assert all(len(p) <= 300 for p in split_passages(unbroken, size=300, overlap=0, most=10))


def test_a_huge_memory_is_embedded_up_to_the_most_passages():
    assert len(split_passages(TEXT * 20, size=300, overlap=60, most=5)) == 5
