"""Long memories are embedded as passages: several vectors per memory, one memory all the same.

The bundled model (all-MiniLM-L6-v2) reads 256 word pieces, about 800–1,000 characters of prose and
fewer of code: a 3,700-character message embedded whole is embedded from its first paragraph only,
and a fact in its last paragraph cannot be found by meaning. So a memory longer than
`passage_chars` is split into passages of about that size, on sentence (or line) boundaries, each
starting with the last sentences of the one before (`passage_overlap_chars`), so a fact cut at a
boundary is whole in one of them. The memory's own `embedding` is its first passage's; the others
go to `memory_passages`, keyed by the content hash they were computed from, so a passage of an
older content is never read. Search scores a memory by its best vector, head or passage
(`pipelines/memories/search.py`); the full text stays one memory, returned whole.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pgvector.sqlalchemy import Vector
from sqlalchemy import delete, literal_column, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.embedder import model_identity
from core.settings import get_settings
from schemas.tables import Memory, MemoryPassage

# A sentence ends at . ! ? (maybe closed by a quote or bracket) before a space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _sentences(content: str, limit: int) -> list[str]:
    """The content's sentences (or lines), none longer than `limit` characters (longer ones are cut)."""
    text = _SPACES.sub(" ", content).strip()
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > limit:
            cut = sentence.rfind(" ", limit // 2, limit)
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


def split_passages(content: str, size: int | None = None, overlap: int | None = None,
                   most: int | None = None) -> list[str]:
    """The passages to embed for a memory: `[content]` when it fits in one, else sentence-packed
    passages of at most `size` characters, each repeating up to `overlap` characters of sentences
    from the end of the one before; at most `most` (the rest of a huge memory is not embedded)."""
    settings = get_settings()
    size = size or settings.passage_chars
    overlap = settings.passage_overlap_chars if overlap is None else overlap
    most = most or settings.passage_max
    if len(content) <= size:
        return [content]
    sentences = _sentences(content, size)
    passages: list[str] = []
    current: list[str] = []
    length = 0
    fresh = False  # whether `current` holds a sentence no passage has yet
    for sentence in sentences:
        if fresh and length + 1 + len(sentence) > size:
            passages.append(" ".join(current))
            if len(passages) >= most:
                return passages
            # Carry the last sentences (up to `overlap` characters) into the next passage.
            carried: list[str] = []
            kept = 0
            for previous in reversed(current):
                if kept + len(previous) > overlap:
                    break
                carried.insert(0, previous)
                kept += len(previous) + 1
            current, length = carried, max(0, kept - 1)
            fresh = False
            if length + 1 + len(sentence) > size:  # no room for the overlap beside this sentence
                current, length = [], 0
        current.append(sentence)
        length += len(sentence) + (1 if length else 0)
        fresh = True
    if fresh:
        passages.append(" ".join(current))
    return passages or [content]


@dataclass
class Embedded:
    """A memory's vectors: its own (`head`, the first passage's) and the rest of its passages'."""

    head: list[float]
    passages: list[list[float]]


async def embed_contents(embed, contents: Sequence[str]) -> list[Embedded]:
    """Each content's vectors, all passages embedded in one call of `embed` (a list of texts → vectors);
    only the memory's own vector unless `passage_embedding` is on."""
    split = [split_passages(c) if get_settings().passage_embedding else [c] for c in contents]
    vectors = await embed([p for passages in split for p in passages])
    out, start = [], 0
    for passages in split:
        own = vectors[start:start + len(passages)]
        out.append(Embedded(own[0], own[1:]))
        start += len(passages)
    return out


def passage_rows(memory_id: uuid.UUID, org_id: uuid.UUID, digest: str, embedded: Embedded) -> list[dict]:
    """The `memory_passages` rows of one memory (none for a memory that fits in one passage)."""
    model = model_identity()
    return [dict(memory_id=memory_id, ord=i + 1, org_id=org_id, content_hash=digest, embedding=vector,
                 embedding_model=model) for i, vector in enumerate(embedded.passages)]


async def add_passages(session: AsyncSession, rows: list[dict]) -> None:
    """Insert passages; those an earlier attempt stored are left as they are."""
    if rows:
        # RETURNING: sent as multi-row VALUES (insertmanyvalues), not one INSERT per row (asyncpg's executemany).
        await session.execute(pg_insert(MemoryPassage).on_conflict_do_nothing().returning(MemoryPassage.memory_id),
                              rows)


async def replace_passages(session: AsyncSession, memory_id: uuid.UUID, rows: list[dict]) -> None:
    """A memory's passages for its new content, in place of the old ones."""
    await session.execute(delete(MemoryPassage).where(MemoryPassage.memory_id == memory_id))
    await add_passages(session, rows)


def passage_statement(vector: list[float], clauses: list, limit: int, exact: bool, model: str | None = None,
                      prev: bool = False):
    """The nearest passages of the memories within `clauses` (cosine distance), as (memory id, distance).

    Only passages of the memory's current content, embedded by `model` (None: the current one), count. `exact` (a small
    scope) keeps the planner off the HNSW index: it reads the scope's memories through their b-tree, then
    their passages. `prev`: compare with the vectors kept aside during a switch of dimension (`embedding_prev`).
    """
    column = (literal_column("memory_passages.embedding_prev", type_=Vector()) if prev
              else MemoryPassage.embedding)
    recorded = literal_column("memory_passages.embedding_model_prev") if prev else MemoryPassage.embedding_model
    distance = column.cosine_distance(vector)
    return (select(MemoryPassage.memory_id, distance.label("d"))
            .join(Memory, Memory.id == MemoryPassage.memory_id)
            .where(*clauses, MemoryPassage.content_hash == Memory.content_hash,
                   recorded == (model or model_identity()))
            .order_by(distance + 0 if exact else distance).limit(limit))
