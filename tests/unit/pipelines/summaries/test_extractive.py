"""pipelines/summaries/extractive.py: central sentences, no repeats, within budget, in order;
map-reduce for long inputs.

The embedder is a fake: a bag of content words hashed into 256 dimensions, so sentences that share
words are similar and a near-copy is nearly identical, as with a real model, without loading one.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from pipelines.summaries import extractive
from pipelines.summaries.extractive import Sentence, centrality, compose, select

STOPWORDS = frozenset({"a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "is", "are", "was", "were",
                       "be", "i", "we", "you", "it", "my", "our", "this", "that", "with"})


def fake_vector(text: str, dim: int = 256) -> list[float]:
    vector = np.zeros(dim)
    for word in re.findall(r"[a-z]+", text.lower()):
        if word not in STOPWORDS:
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    norm = np.linalg.norm(vector)
    return (vector / norm if norm else vector).tolist()


class FakeEmbedder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [fake_vector(t) for t in texts]


def vectors(texts: list[str]) -> np.ndarray:
    return np.array([fake_vector(t) for t in texts])


TRIP = [
    "We planned the Lisbon trip for the first week of June.",
    "The Lisbon trip needs flights booked before the end of May.",
    "For the Lisbon trip we want a hotel near the river.",
    "The printer is out of toner.",
    "Flights and the hotel for the Lisbon trip fit the June budget.",
]


def test_centrality_ranks_the_sentence_others_echo_highest():
    hub = np.array([1.0, 1.0, 1.0])
    spokes = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])]
    scores = centrality(np.stack([spokes[0], hub, spokes[1], spokes[2]]))
    assert scores.argmax() == 1 and scores[1] == pytest.approx(1.0)
    assert all(scores[i] < scores[1] for i in (0, 2, 3))


def test_centrality_picks_the_on_topic_sentence_and_never_the_aside():
    scores = centrality(vectors(TRIP))
    assert scores.argmin() == 3  # the printer
    [picked] = [select(vectors(TRIP), TRIP, max_sentences=1, target_chars=1000)]
    assert len(picked) == 1 and picked[0] != 3
    assert "Lisbon" in TRIP[picked[0]]
    assert 3 not in select(vectors(TRIP), TRIP, max_sentences=3, target_chars=1000)


def test_near_identical_sentences_are_not_both_picked():
    texts = ["The user prefers window seats on long flights.",
             "The user prefers window seats on long flights!",
             "The user prefers aisle seats on short flights.",
             "The user is allergic to peanuts and shellfish."]
    picked = select(vectors(texts), texts, max_sentences=4, target_chars=10_000)
    assert not {0, 1} <= set(picked)
    assert {2, 3} <= set(picked)  # the budget had room: only the repeat was left out


def test_the_sentence_and_character_budgets_are_respected():
    texts = [f"Sentence number {n} talks about the Lisbon trip budget and flights." for n in range(20)]
    texts += [f"Another note {n} covers the hotel booking and the Lisbon river view." for n in range(20)]
    picked = select(vectors(texts), texts, max_sentences=3, target_chars=10_000)
    assert len(picked) <= 3
    budget = 150
    picked = select(vectors(texts), texts, max_sentences=50, target_chars=budget)
    assert sum(len(texts[i]) for i in picked) + len(picked) - 1 <= budget and picked


def test_picked_sentences_keep_their_original_order():
    picked = select(vectors(TRIP), TRIP, max_sentences=3, target_chars=10_000)
    assert picked == sorted(picked) and len(picked) == 3
    text = compose([Sentence(TRIP[i], source=i) for i in picked])
    positions = [text.index(TRIP[i]) for i in picked]
    assert positions == sorted(positions)


def test_an_aside_is_not_picked_just_because_it_is_short_enough_to_fit():
    # After the first pick only 30 characters are left: the printer sentence would fit, the others not.
    assert len(TRIP[3]) < 30 < min(len(t) for n, t in enumerate(TRIP) if n != 3)
    budget = len(TRIP[4]) + 1 + 30
    picked = select(vectors(TRIP), TRIP, max_sentences=5, target_chars=budget)
    assert 3 not in picked and len(picked) == 1


def test_short_fillers_are_passed_over_for_substantial_sentences():
    texts = ["Ok.", "Thanks!", "Sure.", "The deployment moves to Thursday at noon.", "Ok."]
    assert select(vectors(texts), texts, max_sentences=2, target_chars=1000) == [3]


def test_compose_joins_within_a_memory_with_spaces_and_across_memories_with_line_breaks():
    picked = [Sentence("A one.", 0), Sentence("A two.", 0), Sentence("B one.", 1)]
    assert compose(picked) == "A one. A two.\nB one."


def test_compose_names_the_speaker_of_a_line_that_starts_mid_turn():
    picked = [Sentence("User: Hi.", 0), Sentence("Ready.", 0, "User: "), Sentence("Sure.", 1, "Bot: "),
              Sentence("Done.", 1, "Bot: ")]
    assert compose(picked) == "User: Hi. Ready.\nBot: Sure. Done."


async def test_a_sentence_picked_without_its_turns_first_says_who_spoke_within_budget():
    label = "Assistant: "
    sentences = [Sentence(f"{label}The Lisbon trip starts on June 2nd with morning flights.", 0),
                 Sentence("The Lisbon hotel by the river costs 140 euros a night.", 0, label)]
    budget = len(sentences[1].standalone)
    summary = await extractive.summarize(sentences[1:], FakeEmbedder().embed, chunk_chars=5000,
                                         target_chars=budget, max_sentences=3, progress=_ignore)
    assert summary.text == sentences[1].standalone and len(summary.text) <= budget


async def test_summarize_a_short_conversation_is_one_chunk_within_budget():
    embedder = FakeEmbedder()
    seen: list[tuple[int, int, str]] = []

    async def progress(done: int, total: int, message: str) -> None:
        seen.append((done, total, message))

    sentences = [Sentence(t, n) for n, t in enumerate(TRIP)]
    summary = await extractive.summarize(sentences, embedder.embed, chunk_chars=5000, target_chars=200,
                                         max_sentences=5, progress=progress)
    assert summary.chunks == 1 and summary.reduce_rounds == 0 and len(embedder.calls) == 1
    assert len(summary.text) <= 200 and "printer" not in summary.text
    assert seen == [(1, 2, "summarized chunk 1 of 1")]
    assert summary.sentences == sorted(summary.sentences)


async def test_summarize_a_long_conversation_map_reduces_with_progress_per_chunk():
    topics = ["flights to Lisbon", "the hotel by the river", "the June budget", "museum tickets", "train to Porto"]
    texts = [f"Turn {n}: we discussed {topics[n % 5]} and agreed on step {n} of {topics[n % 5]}." for n in range(120)]
    texts.insert(57, "The office printer is out of toner.")
    sentences = [Sentence(t, n) for n, t in enumerate(texts)]
    embedder = FakeEmbedder()
    seen: list[tuple[int, int, str]] = []

    async def progress(done: int, total: int, message: str) -> None:
        seen.append((done, total, message))

    summary = await extractive.summarize(sentences, embedder.embed, chunk_chars=600, target_chars=400,
                                         max_sentences=6, progress=progress)
    assert summary.chunks > 5 and len(embedder.calls) == summary.chunks  # one embedding call per chunk, no more
    assert [s for s in seen if s[2].startswith("summarized")] == [
        (n, summary.chunks + 1, f"summarized chunk {n} of {summary.chunks}") for n in range(1, summary.chunks + 1)]
    assert summary.reduce_rounds >= 1 and len(seen) == summary.chunks + summary.reduce_rounds
    assert len(summary.text) <= 400 and 1 <= len(summary.sentences) <= 6
    assert "printer" not in summary.text
    assert summary.sentences == sorted(summary.sentences)
    assert all(texts[i] in summary.text for i in summary.sentences)


async def test_a_single_sentence_longer_than_the_budget_is_cut_to_it():
    long = "The migration plan " + "covers every table and index carefully " * 10 + "in one night."
    summary = await extractive.summarize([Sentence(long, 0)], FakeEmbedder().embed, chunk_chars=5000,
                                         target_chars=80, max_sentences=3, progress=_ignore)
    assert len(summary.text) <= 80 and summary.text.endswith("…") and long.startswith(summary.text[:-1])


async def test_summarize_refuses_an_empty_conversation():
    with pytest.raises(ValueError):
        await extractive.summarize([], FakeEmbedder().embed, chunk_chars=100, target_chars=100, max_sentences=3,
                                   progress=_ignore)


async def _ignore(done: int, total: int, message: str) -> None:
    return None
