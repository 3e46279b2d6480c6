"""pipelines/summaries/abstractive.py: the map-reduce around model calls, with a scripted stand-in for the model."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.summaries import abstractive
from pipelines.summaries.abstractive import max_tokens_for


class ScriptedModel:
    """Answers each call with a numbered summary naming the call, and records what it was asked."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[tuple[list[dict[str, str]], int]] = []
        self.fail_on = fail_on

    async def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        self.calls.append((messages, max_tokens))
        n = len(self.calls)
        await asyncio.sleep(0)  # let concurrent calls interleave, as real ones do
        if n == self.fail_on:
            raise RuntimeError(f"call {n} failed")
        return f"summary-{n}"

    def prompts(self) -> list[str]:
        return [messages[-1]["content"] for messages, _ in self.calls]


class Progress:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, str]] = []

    async def __call__(self, done: int, total: int, message: str) -> None:
        self.seen.append((done, total, message))


async def test_a_short_conversation_is_one_call_whose_answer_is_the_summary():
    model, progress = ScriptedModel(), Progress()
    turns = ["User: I moved to Lisbon in May.", "Assistant: How do you like it?"]
    summary = await abstractive.summarize(turns, model.complete, chunk_chars=5000, target_chars=300, concurrency=4,
                                          progress=progress)
    assert summary.text == "summary-1" and summary.calls == 1 and summary.chunks == 1 and summary.reduce_rounds == 0
    [(messages, max_tokens)] = model.calls
    assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
    assert all(turn in messages[1]["content"] for turn in turns) and "300 characters" in messages[1]["content"]
    assert max_tokens == max_tokens_for(300)
    assert progress.seen == [(1, 2, "summarized chunk 1 of 1")]


async def test_a_long_conversation_is_summarized_per_chunk_then_merged_in_order():
    model, progress = ScriptedModel(), Progress()
    turns = [f"Turn {n}: " + "words " * 30 for n in range(12)]  # ~190 characters each
    summary = await abstractive.summarize(turns, model.complete, chunk_chars=600, target_chars=300, concurrency=3,
                                          progress=progress)
    maps = [p for p in model.prompts() if "<conversation>" in p]
    assert summary.chunks == len(maps) == 4  # three turns per chunk
    for n, prompt in enumerate(sorted(maps, key=lambda p: int(p.split("part ")[1].split(" ")[0]))):
        assert f"part {n + 1} of 4" in prompt and f"Turn {3 * n}:" in prompt and f"Turn {3 * n + 3}:" not in prompt
    [merge] = [p for p in model.prompts() if "<summaries>" in p]
    assert summary.text == f"summary-{len(model.calls)}" and summary.calls == 5 and summary.reduce_rounds == 1
    # The merge lists every chunk summary exactly once, in chunk order.
    listed = [line.split("] ", 1)[1] for line in merge.split("\n") if line.startswith("[")]
    assert sorted(listed) == sorted(f"summary-{n}" for n in range(1, 5))
    assert [d for d, _, m in progress.seen if m.startswith("summarized")] == [1, 2, 3, 4]
    assert all(total == 5 for _, total, _ in progress.seen)


async def test_partial_summaries_too_long_for_one_merge_are_merged_in_rounds():
    long_answer = "x " * 200  # every answer is 400 characters: two of them fill a 600-character chunk

    async def verbose(messages: list[dict[str, str]], max_tokens: int) -> str:
        verbose.calls += 1
        return long_answer

    verbose.calls = 0
    progress = Progress()
    turns = [f"Turn {n}: " + "words " * 90 for n in range(8)]  # one turn per chunk
    summary = await abstractive.summarize(turns, verbose, chunk_chars=600, target_chars=300, concurrency=2,
                                          progress=progress)
    assert summary.chunks == 8 and summary.reduce_rounds >= 2
    assert summary.calls == verbose.calls and summary.text == long_answer
    assert any(m.startswith("combining: round") for _, _, m in progress.seen)


async def test_a_failing_call_fails_the_summary_and_cancels_the_rest():
    model = ScriptedModel(fail_on=2)
    turns = [f"Turn {n}: " + "words " * 90 for n in range(6)]
    with pytest.raises(RuntimeError, match="call 2 failed"):
        await abstractive.summarize(turns, model.complete, chunk_chars=600, target_chars=300, concurrency=2,
                                    progress=Progress())
    assert len(model.calls) < 6 + 1  # no merge was attempted


async def test_at_most_concurrency_calls_run_at_once():
    running = peak = 0

    async def slow(messages: list[dict[str, str]], max_tokens: int) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "ok"

    turns = [f"Turn {n}: " + "words " * 90 for n in range(9)]
    await abstractive.summarize(turns, slow, chunk_chars=600, target_chars=100, concurrency=3, progress=Progress())
    assert peak == 3


async def test_progress_only_goes_forward_when_chunks_finish_out_of_order():
    reported: list[int] = []

    async def slow_report(done: int, total: int, message: str) -> None:
        await asyncio.sleep(0.002 * (6 - done))  # an earlier report takes longer to land
        reported.append(done)

    async def quick(messages: list[dict[str, str]], max_tokens: int) -> str:
        return "ok"

    turns = [f"Turn {n}: " + "words " * 90 for n in range(5)]
    await abstractive.summarize(turns, quick, chunk_chars=600, target_chars=100, concurrency=5,
                                progress=slow_report)
    assert reported[:5] == [1, 2, 3, 4, 5]


async def test_a_turn_longer_than_a_chunk_is_split_not_dropped():
    model = ScriptedModel()
    turn = " ".join(f"w{n}" for n in range(400))  # ~1900 characters
    summary = await abstractive.summarize([turn], model.complete, chunk_chars=500, target_chars=100, concurrency=1,
                                          progress=Progress())
    maps = [p for p in model.prompts() if "<conversation>" in p]
    assert summary.chunks == len(maps) >= 4
    assert all(f"w{n}" in "".join(maps) for n in range(400))


def test_max_tokens_leaves_room_for_the_target_length():
    assert max_tokens_for(1000) >= 1000 // 4 and max_tokens_for(10) >= 64
