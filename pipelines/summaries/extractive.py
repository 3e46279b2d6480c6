"""Extractive summaries: the most central sentences of a conversation, without saying anything twice.

Sentences are embedded; a sentence's centrality is its TextRank score (PageRank over the graph
whose edges are positive cosine similarities), so sentences that many others echo rank high and an
aside ranks low. Sentences are then picked greedily by maximal marginal relevance (centrality minus
similarity to what is already picked), near-duplicates of a picked sentence are skipped outright,
as are fillers ("Ok.") and asides far less central than the best, and picking stops at the sentence
or character budget. The summary lists the picked sentences in
their original order.

Long inputs are map-reduced: each chunk of `chunk_chars` characters contributes its best sentences,
then those candidates are narrowed again (in groups of `chunk_chars`, reusing their vectors) until
one final pick fits the budget. Nothing here does I/O: the embedder and the progress callback are
passed in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.splitting import chunk_by_chars, truncate

Embed = Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]]
Progress = Callable[[int, int, str], Awaitable[None]]

# Weight of redundancy against centrality in maximal marginal relevance (0: centrality only).
DIVERSITY = 0.3
# Cosine similarity from which a sentence restates a picked one (MiniLM gives paraphrases ~0.9).
DUPLICATE_SIMILARITY = 0.88
# Shorter sentences ("Ok.", "Thanks!") are picked only when there is nothing longer.
MIN_WORDS = 4
# Sentences less central than this (relative to the most central) are asides, not summary material,
# even when they are all that still fits the budget.
MIN_CENTRALITY = 0.3
DAMPING = 0.85
_ITERATIONS = 100


@dataclass(frozen=True)
class Sentence:
    """One sentence, the position (in conversation order) of the memory it came from, and its speaker.

    `label` ("Assistant: ") is the speaker tag of the memory the sentence continues, so a sentence
    picked without the turn's first one still says who spoke; empty when the sentence carries it.
    """

    text: str
    source: int
    label: str = ""

    @property
    def standalone(self) -> str:
        """The sentence as it reads at the start of a line of the summary."""
        return self.label + self.text


@dataclass(frozen=True)
class ExtractiveSummary:
    text: str
    sentences: list[int]  # indices of the picked sentences, in order
    chunks: int
    reduce_rounds: int


def centrality(vectors: np.ndarray) -> np.ndarray:
    """TextRank score of each row of `vectors`, scaled so the most central is 1."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    unit = _normalise(vectors)
    weights = np.clip(unit @ unit.T, 0.0, None)
    np.fill_diagonal(weights, 0.0)
    degree = weights.sum(axis=1, keepdims=True)
    # A sentence like no other (degree 0) passes its vote to everyone evenly.
    transition = np.divide(weights, degree, out=np.full_like(weights, 1.0 / n), where=degree > 0)
    rank = np.full(n, 1.0 / n)
    for _ in range(_ITERATIONS):
        updated = (1 - DAMPING) / n + DAMPING * (transition.T @ rank)
        if np.abs(updated - rank).sum() < 1e-9:
            rank = updated
            break
        rank = updated
    return rank / rank.max()


def select(vectors: np.ndarray, texts: Sequence[str], *, max_sentences: int, target_chars: int,
           separator: int = 1) -> list[int]:
    """Indices of the sentences to keep, ascending: central, not redundant, within both budgets.

    Always at least one index for a non-empty input: when even the best sentence is longer than
    `target_chars`, it alone is returned (the caller truncates it).
    """
    n = len(texts)
    if n == 0:
        return []
    unit = _normalise(vectors)
    similarity = unit @ unit.T
    # Fillers stay out of the graph too: a chat's many "Ok."s would otherwise echo each other to the top.
    substantial = [i for i in range(n) if len(texts[i].split()) >= MIN_WORDS] or list(range(n))
    scores = np.zeros(n)
    scores[substantial] = centrality(unit[substantial])
    eligible = [i for i in substantial if scores[i] >= MIN_CENTRALITY]
    candidates = set(eligible)
    picked: list[int] = []
    used = 0
    closest = np.zeros(n)  # each sentence's highest similarity to a picked one
    while candidates and len(picked) < max_sentences:
        relevance = {i: (1 - DIVERSITY) * scores[i] - DIVERSITY * closest[i] for i in candidates}
        best = max(candidates, key=lambda i: (relevance[i], -i))
        candidates.discard(best)
        if picked and closest[best] >= DUPLICATE_SIMILARITY:
            continue
        cost = len(texts[best]) + (separator if picked else 0)
        if used + cost > target_chars:
            continue  # a shorter sentence may still fit
        picked.append(best)
        used += cost
        closest = np.maximum(closest, similarity[best])
    if not picked:
        picked = [max(eligible, key=lambda i: (scores[i], -i))]
    return sorted(picked)


async def summarize(sentences: Sequence[Sentence], embed: Embed, *, chunk_chars: int, target_chars: int,
                    max_sentences: int, progress: Progress) -> ExtractiveSummary:
    """Map-reduce an extractive summary of `sentences` (in conversation order) within the budgets."""
    if not sentences:
        raise ValueError("nothing to summarize")
    # Budgets count the speaker tag: a sentence may start a line of the summary.
    texts = [s.standalone for s in sentences]
    chunks = chunk_by_chars([len(t) for t in texts], chunk_chars)
    total = len(chunks) + 1  # the last step combines and stores
    # Intermediate picks stay well under a chunk, so each reduce round at least halves the candidates.
    step_chars = target_chars if len(chunks) == 1 else max(1, min(target_chars, chunk_chars // 4))
    kept: list[int] = []
    vectors: dict[int, np.ndarray] = {}
    for n, chunk in enumerate(chunks, start=1):
        embedded = np.asarray(await embed([texts[i] for i in chunk]), dtype=np.float64)
        for local in select(embedded, [texts[i] for i in chunk], max_sentences=max_sentences, target_chars=step_chars):
            kept.append(chunk[local])
            vectors[chunk[local]] = embedded[local]
        await progress(n, total, f"summarized chunk {n} of {len(chunks)}")
    rounds = 0
    while len(chunks) > 1 and _chars(texts, kept) > chunk_chars:
        groups = chunk_by_chars([len(texts[i]) for i in kept], chunk_chars)
        narrowed = [group_pick for group in groups
                    for group_pick in _pick(kept, group, texts, vectors, max_sentences, step_chars)]
        if len(narrowed) >= len(kept):
            break  # nothing left to gain; the final pick below still applies the budget
        kept = narrowed
        rounds += 1
        await progress(len(chunks), total, f"combining: round {rounds}, {len(kept)} candidate sentences")
    if len(chunks) > 1:
        kept = _pick(kept, list(range(len(kept))), texts, vectors, max_sentences, target_chars)
    return ExtractiveSummary(text=truncate(compose([sentences[i] for i in kept]), target_chars), sentences=kept,
                             chunks=len(chunks), reduce_rounds=rounds)


def compose(picked: Sequence[Sentence]) -> str:
    """Join sentences: a space within one memory, a line break (and the speaker tag) between memories."""
    parts: list[str] = []
    for n, sentence in enumerate(picked):
        if n and sentence.source == picked[n - 1].source:
            parts.extend((" ", sentence.text))
        else:
            parts.extend(("\n" if n else "", sentence.standalone))
    return "".join(parts)


def _pick(kept: list[int], group: list[int], texts: Sequence[str], vectors: dict[int, np.ndarray],
          max_sentences: int, target_chars: int) -> list[int]:
    members = [kept[g] for g in group]
    matrix = np.stack([vectors[i] for i in members])
    return [members[local] for local in select(matrix, [texts[i] for i in members], max_sentences=max_sentences,
                                               target_chars=target_chars)]


def _chars(texts: Sequence[str], indices: list[int]) -> int:
    return sum(len(texts[i]) for i in indices) + max(0, len(indices) - 1)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
