"""pipelines/blocks/strategies.py: the offline rewrite strategies keep whole sentences, the block's layout,
and the budget."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.blocks import strategies as rewriting
from pipelines.blocks.strategies import Unit

BLOCK = ("Name: Alice Smith. Works as a nurse in Lisbon.\n"
         "Likes hiking. Allergic to peanuts.\n"
         "Has a sister, Maria, who lives in Porto.\n"
         "Prefers short answers. Dislikes emojis.")


def test_units_remember_where_lines_began_and_join_back_into_the_same_layout():
    units = rewriting.units_of(BLOCK)
    assert [u.text for u in units][:3] == ["Name: Alice Smith.", "Works as a nurse in Lisbon.", "Likes hiking."]
    assert [u.line_start for u in units] == [True, False, True, False, True, True, False]
    assert rewriting.join(units) == BLOCK


def test_preserve_recent_keeps_the_newest_whole_sentences_that_fit():
    target = 80
    kept = rewriting.preserve_recent(BLOCK, target)
    assert len(kept) <= target
    assert kept == "Has a sister, Maria, who lives in Porto.\nPrefers short answers. Dislikes emojis."
    # One more sentence would not have fitted.
    assert len("Allergic to peanuts.\n" + kept) > target


def test_preserve_recent_keeps_a_line_tail_when_its_start_does_not_fit():
    kept = rewriting.preserve_recent(BLOCK, 45)
    assert kept == "Prefers short answers. Dislikes emojis."


def test_preserve_recent_cuts_one_overlong_sentence_at_a_word_keeping_its_end():
    sentence = "word " * 40 + "the newest fact is here"
    kept = rewriting.preserve_recent(sentence, 30)
    assert len(kept) <= 30 and kept.startswith("…") and kept.endswith("the newest fact is here")


@pytest.mark.parametrize("seed", range(20))
def test_strategies_never_exceed_the_target_and_never_invent_text(seed):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "lisbon", "porto", "peanuts", "x" * 30]
    lines = []
    for _ in range(rng.randint(1, 12)):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 15))).capitalize() + "."
                     for _ in range(rng.randint(1, 4))]
        lines.append(" ".join(sentences))
    text = "\n".join(lines)
    target = rng.randint(10, max(11, len(text)))
    units = rewriting.units_of(text)
    vectors = np.random.default_rng(seed).normal(size=(len(units), 8))
    for out in (rewriting.preserve_recent(text, target), rewriting.preserve_important(units, vectors, target),
                rewriting.trim_to(text, target)):
        assert len(out) <= target
        for piece in out.replace("…", "").split("\n"):
            assert piece.strip() == "" or piece.strip() in text.replace("\n", " ") or piece.strip() in text


def _vectors(*directions: list[float]) -> np.ndarray:
    return np.array(directions, dtype=float)


def test_preserve_important_keeps_the_central_sentences_in_their_original_order():
    units = [Unit("Alice is a nurse in Lisbon.", True), Unit("The printer is out of toner.", True),
             Unit("Alice works night shifts at the Lisbon hospital.", True),
             Unit("Alice's hospital is near the river.", True)]
    # Three sentences about Alice's work lean the same way (none a duplicate); the printer aside points away.
    vectors = _vectors([1, 0, 0], [0, -1, 0.05], [0.6, 0.8, 0], [0.6, 0.3, 0.74])
    kept = rewriting.preserve_important(units, vectors, target=80)
    assert "printer" not in kept
    lines = kept.split("\n")
    assert all(line in [u.text for u in units] for line in lines)
    order = [[u.text for u in units].index(line) for line in lines]
    assert order == sorted(order) and len(kept) <= 80 and len(lines) == 2


def test_preserve_important_drops_a_repeated_fact_before_anything_else():
    units = [Unit("Alice is allergic to peanuts.", True), Unit("Alice lives in Lisbon.", True),
             Unit("Alice is allergic to peanuts!", True)]
    vectors = _vectors([1, 0.2], [0.7, 0.7], [1, 0.2])
    kept = rewriting.preserve_important(units, vectors, target=1000)  # room for everything
    assert kept.count("peanuts") == 1 and "Lisbon" in kept


def test_a_kept_sentence_whose_line_start_was_dropped_starts_its_own_line():
    units = [Unit("First fact here.", True), Unit("Second fact of the same line.", False), Unit("Third.", True)]
    vectors = _vectors([0, 0, 1], [1, 0, 0], [0.5, 0.5, 0])
    kept = rewriting.preserve_important(units, vectors, target=40)
    assert kept == "Second fact of the same line.\nThird."


def test_trim_to_keeps_the_leading_sentences_of_an_overlong_answer():
    answer = "Alice is a nurse. She lives in Lisbon. She likes hiking."
    assert rewriting.trim_to(answer, 40) == "Alice is a nurse. She lives in Lisbon."
    assert rewriting.trim_to("one enormous sentence without any end " * 5, 20).endswith("…")


def test_rewrite_messages_state_the_target_and_carry_the_block():
    messages = rewriting.rewrite_messages("human", "Facts about the user", BLOCK, 120)
    assert messages[0]["role"] == "system" and "at most 120 characters" in messages[1]["content"]
    assert BLOCK in messages[1]["content"] and "Facts about the user" in messages[1]["content"]
    again = rewriting.shorten_messages(messages, "too long answer", 120)
    assert again[-2] == {"role": "assistant", "content": "too long answer"} and "120" in again[-1]["content"]
