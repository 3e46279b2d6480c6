"""Abstractive summaries: a language model condenses a conversation, map-reduce for long ones.

Map: each chunk of `chunk_chars` characters is summarized on its own (a few at a time). Reduce:
the chunk summaries, in conversation order, are merged into one; when they are still longer than a
chunk, they are merged in groups first, round after round. Nothing here does I/O: the model call
(`complete`) and the progress callback are passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.splitting import chunk_by_chars, split_long

Messages = list[dict[str, str]]
Complete = Callable[[Messages, int], Awaitable[str]]  # (messages, max_tokens) -> the model's text
Progress = Callable[[int, int, str], Awaitable[None]]

SYSTEM_PROMPT = (
    "You summarize conversations for an AI agent's long-term memory. Write a faithful, concise summary in "
    "plain prose, in the conversation's language. Keep names, facts, decisions, preferences, dates, numbers "
    "and open questions; drop greetings and small talk. Never add anything the text does not say. Answer "
    "with the summary only, no preamble."
)
_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class AbstractiveSummary:
    text: str
    chunks: int
    reduce_rounds: int
    calls: int


def max_tokens_for(target_chars: int) -> int:
    """An output cap for a summary of about `target_chars` characters (~4 per token, with room to finish)."""
    return max(64, target_chars // 2)


def map_messages(text: str, part: int, parts: int, target_chars: int) -> Messages:
    """The prompt that summarizes one chunk of the conversation."""
    where = f" (part {part} of {parts})" if parts > 1 else ""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Summarize this conversation{where} in at most {target_chars} characters."
                                        f"\n\n<conversation>\n{text}\n</conversation>"}]


def reduce_messages(summaries: Sequence[str], target_chars: int) -> Messages:
    """The prompt that merges summaries of consecutive parts of one conversation."""
    listed = _SEPARATOR.join(f"[{n}] {s}" for n, s in enumerate(summaries, start=1))
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "These summarize consecutive parts of one conversation, in order. Merge "
                                        f"them into one summary of at most {target_chars} characters, without "
                                        f"repeating anything.\n\n<summaries>\n{listed}\n</summaries>"}]


async def summarize(passages: Sequence[str], complete: Complete, *, chunk_chars: int, target_chars: int,
                    concurrency: int, progress: Progress) -> AbstractiveSummary:
    """Map-reduce a summary of `passages` (the conversation's turns, in order) with the model."""
    pieces = [piece for passage in passages for piece in split_long(passage, chunk_chars)]
    if not pieces:
        raise ValueError("nothing to summarize")
    chunks = chunk_by_chars([len(p) for p in pieces], chunk_chars, separator=len(_SEPARATOR))
    total = len(chunks) + 1  # the last step combines and stores
    # Partial summaries stay well under a chunk, so each reduce round at least halves their number.
    step_chars = target_chars if len(chunks) == 1 else max(1, min(target_chars, chunk_chars // 4))
    calls = 0
    done = 0
    # Chunks finish in any order, but progress must only go forward: one report at a time.
    reporting = asyncio.Lock()

    async def map_chunk(n: int) -> str:
        nonlocal calls, done
        text = _SEPARATOR.join(pieces[i] for i in chunks[n])
        summary = await complete(map_messages(text, n + 1, len(chunks), step_chars), max_tokens_for(step_chars))
        async with reporting:
            calls += 1
            done += 1
            await progress(done, total, f"summarized chunk {done} of {len(chunks)}")
        return summary

    summaries = await _bounded([lambda n=n: map_chunk(n) for n in range(len(chunks))], concurrency)
    rounds = 0
    while len(summaries) > 1:
        rounds += 1
        if _chars(summaries) <= chunk_chars:
            summaries = [await complete(reduce_messages(summaries, target_chars), max_tokens_for(target_chars))]
            calls += 1
            break
        groups = chunk_by_chars([len(s) for s in summaries], chunk_chars, separator=len(_SEPARATOR))
        if len(groups) == len(summaries):  # each alone fills a chunk: merge pairs, so the count still halves
            groups = [list(range(i, min(i + 2, len(summaries)))) for i in range(0, len(summaries), 2)]
        merges = [_merge([summaries[i] for i in group], complete, step_chars) for group in groups]
        summaries = await _bounded(merges, concurrency)
        calls += sum(len(group) > 1 for group in groups)
        await progress(len(chunks), total, f"combining: round {rounds}, {len(summaries)} partial summaries")
    return AbstractiveSummary(text=summaries[0], chunks=len(chunks), reduce_rounds=rounds, calls=calls)


def _merge(group: list[str], complete: Complete, target_chars: int) -> Callable[[], Awaitable[str]]:
    async def merge() -> str:
        if len(group) == 1:
            return group[0]  # nothing to merge it with this round
        return await complete(reduce_messages(group, target_chars), max_tokens_for(target_chars))

    return merge


async def _bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    """Run the coroutine factories at most `concurrency` at a time; results in order; the first error wins."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def gated(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    tasks = [asyncio.ensure_future(gated(job)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _chars(texts: Sequence[str]) -> int:
    return sum(len(t) for t in texts) + len(_SEPARATOR) * max(0, len(texts) - 1)
