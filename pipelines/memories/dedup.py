"""Duplicate detection without an LLM: exact (same content hash) and near (similar embedding, nothing new said).

Cosine similarity alone can't be trusted to call two texts the same fact: with all-MiniLM-L6-v2,
"I am not allergic to peanuts" scores 0.970 against "I am allergic to peanuts", "Flight on Saturday"
0.977 against "Flight on Friday", "Prefers coffee over tea" 0.995 against "Prefers tea over coffee".
So a near duplicate must pass two tests: cosine ≥ `dedup_similarity`, and the new text says nothing
the stored one doesn't: its words (case, punctuation, articles and contractions aside) appear in the
stored text in the same order, and the words the stored text has on top include no negation, no
number and no marker of a past state ("used to", "formerly", "anymore"). Anything else is left to the
LLM (`infer`) or kept (`deduplicate`): a duplicate kept costs less than a fact lost.

Scope is exact: the same organization and the same user_id, agent_id and run_id (NULL matching NULL).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from pipelines.memories import search
from pipelines.memories.corpus import MEMORIES
from schemas.tables import Memory

ARTICLES = frozenset({"a", "an", "the"})
# Words that turn a statement into its opposite or into a past state: never "nothing new".
FLIP_WORDS = frozenset({
    "not", "no", "never", "nor", "none", "nothing", "nobody", "nowhere", "neither", "without", "anymore",
    "longer", "used", "formerly", "former", "previously", "ex", "until", "stopped", "quit", "except",
})
NUMBER_WORDS = frozenset({
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty",
    "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million", "billion",
    "once", "twice", "half", "double", "first", "second", "third",
})
_CONTRACTIONS = (("won't", "will not"), ("can't", "can not"), ("cannot", "can not"), ("n't", " not"),
                 ("'m", " am"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"), ("'d", " would"))
_WORD = re.compile(r"\w+(?:'\w+)*")
SCOPES = ("user_id", "agent_id", "run_id")


def words(content: str) -> list[str]:
    """The text's words for comparison: casefolded, contractions expanded, punctuation and articles dropped."""
    lowered = content.casefold().replace("\u2019", "'")
    for short, long in _CONTRACTIONS:
        lowered = lowered.replace(short, long)
    return [w for w in _WORD.findall(lowered) if w not in ARTICLES]


def _significant(word: str) -> bool:
    return word in FLIP_WORDS or word in NUMBER_WORDS or any(c.isdigit() for c in word)


def says_nothing_new(new: str, stored: str) -> bool:
    """True if `new`'s words appear in order in `stored`, and what `stored` adds is no negation or number."""
    new_words, stored_words = words(new), words(stored)
    if not new_words:
        return False
    remaining = iter(stored_words)
    if not all(any(w == s for s in remaining) for w in new_words):  # an in-order subsequence
        return False
    extra = Counter(stored_words) - Counter(new_words)
    return not any(_significant(w) for w in extra)


def near_duplicate(new: str, stored: str, similarity: float, threshold: float) -> bool:
    """Whether `new` repeats `stored`: similar embeddings and nothing new said (see the module docstring)."""
    return similarity >= threshold and says_nothing_new(new, stored)


@dataclass(frozen=True)
class Scope:
    """Who a memory is about: compared exactly, NULL matching NULL."""

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None

    @classmethod
    def of(cls, item: Any) -> Scope:
        """The scope of a payload item (a dict) or a Memory row."""
        get = item.get if isinstance(item, dict) else lambda f: getattr(item, f)
        return cls(get("user_id"), get("agent_id"), get("run_id"))

    def clauses(self, org_id: uuid.UUID) -> list:
        """SQL conditions selecting the live (not deleted, not expired) memories of this scope."""
        return [*MEMORIES.org_clauses(org_id),
                *(getattr(Memory, f).is_not_distinct_from(getattr(self, f)) for f in SCOPES)]

    def as_dict(self) -> dict[str, str | None]:
        """The scope as memory column values."""
        return {f: getattr(self, f) for f in SCOPES}


@dataclass(frozen=True)
class Match:
    """An existing memory (or an earlier item) that a text duplicates."""

    memory_id: uuid.UUID
    kind: str  # "exact" or "near"
    similarity: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape in job results."""
        return {"memory_id": str(self.memory_id), "match": self.kind, "similarity": round(self.similarity, 4)}


async def exact_matches(session: AsyncSession, org_id: uuid.UUID,
                        wanted: Sequence[tuple[Scope, str]]) -> dict[tuple[Scope, str], uuid.UUID]:
    """For each (scope, content hash): a live memory of that scope with that hash (one query)."""
    hashes = list({digest for _, digest in wanted})
    if not hashes:
        return {}
    rows = await session.execute(select(Memory.id, Memory.content_hash, Memory.user_id, Memory.agent_id,
                                        Memory.run_id).where(*MEMORIES.org_clauses(org_id),
                                                             Memory.content_hash.in_(hashes))
                                 .order_by(Memory.created_at, Memory.id))
    found: dict[tuple[Scope, str], uuid.UUID] = {}
    for row_id, digest, user_id, agent_id, run_id in rows:
        found.setdefault((Scope(user_id, agent_id, run_id), digest), row_id)
    return {key: found[key] for key in wanted if key in found}


async def nearest(session: AsyncSession, org_id: uuid.UUID, scope: Scope, vector: Sequence[float],
                  limit: int) -> list[tuple[Memory, float]]:
    """The live memories of the scope most similar to `vector` (embedding up to date), best first."""
    hits = await search.vector_neighbours(session, list(vector), [
        *scope.clauses(org_id), Memory.embedded_hash == Memory.content_hash], limit)
    if not hits:
        return []
    rows = await session.execute(select(Memory).options(defer(Memory.embedding))
                                 .where(Memory.id.in_([h.id for h in hits])))
    by_id = {m.id: m for m in rows.scalars()}
    return [(by_id[h.id], h.vector_score) for h in hits if h.id in by_id]


async def stored_duplicate(session: AsyncSession, org_id: uuid.UUID, scope: Scope, content: str,
                           vector: Sequence[float], threshold: float, *, limit: int = 3) -> Match | None:
    """A near duplicate of `content` among the scope's live memories, or None."""
    for memory, similarity in await nearest(session, org_id, scope, vector, limit):
        if near_duplicate(content, memory.content, similarity, threshold):
            return Match(memory.id, "near", similarity)
    return None


def earlier_duplicates(contents: Sequence[str], vectors: Sequence[Sequence[float]], scopes: Sequence[Scope],
                       threshold: float, skip: Sequence[bool] = ()) -> dict[int, tuple[int, str, float]]:
    """For each text that repeats an earlier kept one of the same scope: (earlier index, kind, similarity).

    Texts flagged in `skip` are neither checked nor matched against (they are duplicates already).
    """
    if not contents:
        return {}
    matrix = np.asarray(vectors, dtype=np.float32)
    # The embedders return unit vectors; normalise anyway so the dot product is the cosine.
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    similarities = matrix @ matrix.T
    found: dict[int, tuple[int, str, float]] = {}
    kept: list[int] = []
    for i, content in enumerate(contents):
        if i < len(skip) and skip[i]:
            continue
        for j in kept:
            if scopes[j] != scopes[i]:
                continue
            if contents[j] == content:
                found[i] = (j, "exact", 1.0)
                break
            if near_duplicate(content, contents[j], float(similarities[i, j]), threshold):
                found[i] = (j, "near", float(similarities[i, j]))
                break
        else:
            kept.append(i)
    return found
