"""Rewrite strategies of a core-memory block that grew past its threshold: shorter text, same meaning.

Blocks are edited line by line and appended to at the end, so a block is cut into units: the
sentences of each line (`pipelines.splitting`), each remembering whether it started a line, so the
kept units join back into the block's own layout. Nothing is ever cut mid-sentence unless a single
sentence alone is longer than the target.

- `preserve_recent`: the newest units (from the end) that fit the target.
- `preserve_important`: units ranked by TextRank centrality over their embeddings (as extractive
  summaries are), skipping near-duplicates of a unit already kept (a repeated fact is the first
  thing a full block should lose); the kept ones in their original order.
- `summarize`: the messages that ask an LLM for the rewrite, and `trim_to`, the sentence-aware cut
  applied when the model's answer is still too long.

Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.splitting import split_sentences
from pipelines.summaries.extractive import DUPLICATE_SIMILARITY, centrality

ELLIPSIS = "…"


@dataclass(frozen=True)
class Unit:
    """A sentence of a block, and whether it began a line there."""

    text: str
    line_start: bool


def units_of(text: str) -> list[Unit]:
    """The block's sentences in order, each marked when it started a line."""
    units = []
    for line in text.splitlines():
        for n, sentence in enumerate(split_sentences(line)):
            units.append(Unit(sentence, n == 0))
    return units


def join(units: Sequence[Unit]) -> str:
    """Units back into block text: a new line where a line began, a space between sentences of a line."""
    parts = []
    for n, unit in enumerate(units):
        if n:
            parts.append("\n" if unit.line_start else " ")
        parts.append(unit.text)
    return "".join(parts)


def _joined_length(lengths: Sequence[int]) -> int:
    return sum(lengths) + max(0, len(lengths) - 1)


def _tail(text: str, target: int) -> str:
    """The end of one over-long sentence, cut at a word, marked as cut."""
    if target <= len(ELLIPSIS):
        return text[len(text) - target:] if target > 0 else ""
    rest = text[len(text) - (target - len(ELLIPSIS)):]
    space = rest.find(" ")
    if 0 <= space < len(rest) // 2:
        rest = rest[space + 1:]
    return ELLIPSIS + rest.lstrip()


def _head(text: str, target: int) -> str:
    """The start of one over-long sentence, cut at a word, marked as cut."""
    if target <= len(ELLIPSIS):
        return text[:max(0, target)]
    head = text[:target - len(ELLIPSIS)]
    space = head.rfind(" ")
    if space > len(head) // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + ELLIPSIS


def preserve_recent(text: str, target: int) -> str:
    """The newest whole sentences of `text` that fit in `target` characters, in order."""
    units = units_of(text)
    kept = list(reversed(_fill(reversed(units), target)))
    if not kept and units:
        return _tail(units[-1].text, target)
    return join(kept)


def _fill(units: Iterable[Unit], target: int) -> list[Unit]:
    """Units taken in the given order while they fit in `target` characters, joined by one space each."""
    kept: list[Unit] = []
    used = 0
    for unit in units:
        needed = len(unit.text) + (1 if kept else 0)
        if used + needed > target:
            break
        kept.append(unit)
        used += needed
    return kept


def preserve_important(units: Sequence[Unit], vectors: np.ndarray, target: int) -> str:
    """The most central, non-repeated units that fit in `target` characters, in their original order."""
    if not units:
        return ""
    scores = centrality(np.asarray(vectors, dtype=float))
    unit_vectors = _normalise(np.asarray(vectors, dtype=float))
    # Most central first; between equals, the newer one (blocks are appended to, newer is fresher).
    order = sorted(range(len(units)), key=lambda i: (-round(float(scores[i]), 6), -i))
    picked: list[int] = []
    for i in order:
        if picked and float(np.max(unit_vectors[picked] @ unit_vectors[i])) >= DUPLICATE_SIMILARITY:
            continue  # says again what a kept unit says
        lengths = [len(units[j].text) for j in picked] + [len(units[i].text)]
        if _joined_length(lengths) <= target:
            picked.append(i)
    if not picked:
        return _head(units[order[0]].text, target)
    return join([_keep_line_start(units, i, picked) for i in sorted(picked)])


def _keep_line_start(units: Sequence[Unit], i: int, picked: list[int]) -> Unit:
    """A kept unit starts a line if it did, or if the unit before it in its line was dropped."""
    if units[i].line_start or i == 0:
        return units[i]
    earlier = [j for j in picked if j < i]
    if earlier and max(earlier) == i - 1:
        return units[i]
    return Unit(units[i].text, True)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def trim_to(text: str, target: int) -> str:
    """The leading whole sentences of `text` that fit in `target` characters (a too-long answer, cut)."""
    units = units_of(text)
    kept = _fill(units, target)
    if not kept and units:
        return _head(units[0].text, target)
    return join(kept)


SYSTEM_PROMPT = (
    "You maintain a core-memory block of an AI agent: a short text the agent sees in every prompt. The block has "
    "grown too long. Rewrite it shorter. Keep every durable fact: names, preferences, decisions, dates, numbers "
    "and open tasks. Merge repeated facts into one. When two lines disagree, the later one is the current truth. "
    "Keep the block's own format (for example one fact per line). Never add anything the block does not say. "
    "Answer with the new block text only, no preamble."
)


def rewrite_messages(label: str, description: str | None, value: str, target: int) -> list[dict[str, str]]:
    """The chat messages asking a model to rewrite a block into at most `target` characters."""
    about = f"\nWhat the block is for: {description}" if description else ""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Block `{label}`{about}\nIt has {len(value)} characters; rewrite it in at "
                                        f"most {target} characters.\n\n<block>\n{value}\n</block>"}]


def shorten_messages(previous: list[dict[str, str]], answer: str, target: int) -> list[dict[str, str]]:
    """The follow-up asking again when the model's rewrite was still too long."""
    return [*previous, {"role": "assistant", "content": answer},
            {"role": "user", "content": f"That has {len(answer)} characters; the limit is {target}. Write it again, "
                                        f"shorter: at most {target} characters."}]
