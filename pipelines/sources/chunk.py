"""A document's blocks in chunks for memories: never across a heading, cut between sentences.

Each section (the blocks under one heading path) is packed sentence by sentence into chunks of at
most `size` characters; a sentence longer than that is cut at whitespace. A chunk repeats up to
`overlap` characters of whole sentences from the end of the one before it in its section, so a fact
cut at a boundary is whole in one of them. A chunk's text starts with its heading path (`A › B`),
which helps search find it by its topic; `start`/`end` locate its own sentences in the document's
extracted text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.sources.extract import Block, Document
from pipelines.splitting import split_long, split_sentences

HEADING_SEPARATOR = " › "


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int
    page: int | None


@dataclass(frozen=True)
class Chunk:
    """One memory-to-be: its text, where it came from, and its place in the document."""

    index: int
    body: str
    headings: tuple[str, ...]
    start: int
    end: int
    page: int | None
    page_end: int | None

    @property
    def content(self) -> str:
        """What is stored and embedded: the heading path, a blank line, then the chunk's sentences."""
        return f"{HEADING_SEPARATOR.join(self.headings)}\n\n{self.body}" if self.headings else self.body


def _sentences(block: Block, size: int) -> list[Sentence]:
    """The block's sentences (pieces of at most `size` characters) with their offsets in the document's text."""
    found: list[Sentence] = []
    at = 0
    for sentence in split_sentences(block.text):
        for piece in split_long(sentence, size):
            where = block.text.find(piece, at)
            where = at if where < 0 else where  # whitespace the splitter collapsed: keep the running position
            found.append(Sentence(piece, block.start + where, block.start + where + len(piece), block.page))
            at = where + len(piece)
    return found


def _sections(document: Document) -> list[tuple[tuple[str, ...], list[Block]]]:
    """Consecutive paragraphs under the same heading path; headings themselves are not chunked."""
    sections: list[tuple[tuple[str, ...], list[Block]]] = []
    for block in document.blocks:
        if block.level:
            continue
        if sections and sections[-1][0] == block.headings:
            sections[-1][1].append(block)
        else:
            sections.append((block.headings, [block]))
    return sections


def _pack(sentences: list[Sentence], size: int, overlap: int) -> list[list[Sentence]]:
    """Sentences in groups of at most `size` characters, each group starting with up to `overlap`
    characters of the last sentences of the one before."""
    groups: list[list[Sentence]] = []
    current: list[Sentence] = []
    length = 0
    fresh = False  # whether `current` holds a sentence no group has yet
    for sentence in sentences:
        needed = len(sentence.text) + (1 if current else 0)
        if fresh and length + needed > size:
            groups.append(current)
            carried: list[Sentence] = []
            kept = 0
            for previous in reversed(current):
                if kept + len(previous.text) > overlap:
                    break
                carried.insert(0, previous)
                kept += len(previous.text) + 1
            while carried and kept - 1 + 1 + len(sentence.text) > size:  # no room beside this sentence
                kept -= len(carried.pop(0).text) + 1
            current, length, fresh = carried, max(0, kept - 1), False
            needed = len(sentence.text) + (1 if current else 0)
        current.append(sentence)
        length += needed
        fresh = True
    if fresh:
        groups.append(current)
    return groups


def chunk_document(document: Document, *, size: int, overlap: int) -> list[Chunk]:
    """The document's chunks, in order, numbered from 0."""
    chunks: list[Chunk] = []
    for headings, blocks in _sections(document):
        sentences = [s for block in blocks for s in _sentences(block, size)]
        for group in _pack(sentences, size, overlap):
            pages = [s.page for s in group if s.page is not None]
            chunks.append(Chunk(index=len(chunks), body=" ".join(s.text for s in group), headings=headings,
                                start=group[0].start, end=group[-1].end, page=pages[0] if pages else None,
                                page_end=pages[-1] if pages else None))
    return chunks
