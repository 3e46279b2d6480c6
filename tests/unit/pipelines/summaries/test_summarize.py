"""pipelines/summaries/summarize.py: the parts without a database — payload, sentences of the sources, scope."""

from __future__ import annotations

import uuid

from pipelines.summaries.summarize import _shared, sentences_of, summary_payload
from schemas.summaries import SummaryCreate
from schemas.tables import Memory


def memory(content: str, **scope: str | None) -> Memory:
    return Memory(id=uuid.uuid4(), org_id=uuid.uuid4(), content=content, content_hash="x", **scope)


def test_payload_keeps_the_request_as_given_so_a_replay_hashes_the_same():
    a, b = uuid.uuid4(), uuid.uuid4()
    payload = summary_payload(SummaryCreate(memory_ids=[a, b, a], mode="extractive", target_chars=400))
    assert payload == {"run_id": None, "user_id": None, "agent_id": None, "memory_ids": [str(a), str(b)],
                       "mode": "extractive", "max_sentences": None, "target_chars": 400}
    assert summary_payload(SummaryCreate(run_id="r", user_id="u"))["memory_ids"] is None


def test_sentences_of_tags_each_sentence_with_its_memory_and_splits_overlong_ones():
    sources = [memory("First turn. Second sentence!"), memory("word " * 40)]
    sentences = sentences_of(sources, chunk_chars=50)
    assert [(s.text, s.source) for s in sentences[:2]] == [("First turn.", 0), ("Second sentence!", 0)]
    assert {s.source for s in sentences[2:]} == {1} and len(sentences) > 3
    assert all(len(s.text) <= 50 for s in sentences)


def test_sentences_after_the_first_of_a_turn_carry_its_speaker():
    sentences = sentences_of([memory("Assistant: Sure. Which day? Monday works."), memory("no tag here. none.")],
                             chunk_chars=500)
    assert [(s.label, s.text) for s in sentences] == [
        ("", "Assistant: Sure."), ("Assistant: ", "Which day?"), ("Assistant: ", "Monday works."),
        ("", "no tag here."), ("", "none.")]


def test_the_summary_takes_a_scope_value_only_when_every_source_shares_it():
    sources = [memory("a", user_id="alice", run_id="r1"), memory("b", user_id="alice", run_id="r2")]
    assert _shared(sources, "user_id") == "alice"
    assert _shared(sources, "run_id") is None
    assert _shared(sources, "agent_id") is None
