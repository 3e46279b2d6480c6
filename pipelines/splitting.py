"""Cutting text into sentences, and sentences or passages into chunks under a character budget.

The sentence splitter is a rule-based one tuned for conversation text: it splits on `.`, `!`, `?`
and `…` followed by whitespace, on blank lines and before list items, and not after titles
("Dr."), initials ("J. R. R."), Latin abbreviations ("e.g.") or "No." before a number. Chat text
is often lower-case, so a lower-case word after a full stop still starts a new sentence unless the
word before the stop is an abbreviation.
"""

from __future__ import annotations

import re

# Never end a sentence: a name or an example follows.
_TITLES = frozenset({
    "mr", "mrs", "ms", "mx", "dr", "prof", "rev", "hon", "gen", "col", "lt", "sgt", "capt", "cpt", "gov", "sen",
    "rep", "pres", "supt", "st", "mt", "e.g", "i.e", "cf", "vs", "viz", "approx", "ca", "resp", "incl", "esp",
})
# End a sentence only when a capitalised word follows ("… Acme Inc. Today we …").
_MAY_END = frozenset({
    "etc", "inc", "ltd", "co", "corp", "llc", "jr", "sr", "al", "dept", "univ", "a.m", "p.m", "u.s", "u.k", "u.n",
    "ph.d", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})
# Abbreviations only before a number ("No. 5", "p. 12"); elsewhere the plain word ("I said no.").
_BEFORE_NUMBER = frozenset({"no", "nos", "vol", "vols", "fig", "figs", "p", "pp", "ch", "sec", "art", "ref", "op"})

_BOUNDARY = re.compile(r"([.!?…]+)([\"'”’)\]]*)(\s+)")
# Blank lines, and line breaks before a list item or a speaker's turn ("Alice: …").
_PARAGRAPH = re.compile(r"\n\s*\n|\n(?=[ \t]*(?:[-*•]|\d{1,3}[.)]|[A-Z][\w .'-]{0,30}:)\s)")
_SPACES = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order, whitespace collapsed; never an empty string."""
    sentences: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            if _ends_sentence(paragraph, match):
                sentences.append(paragraph[start:match.end(2)])
                start = match.end()
        sentences.append(paragraph[start:])
    cleaned = (_SPACES.sub(" ", s).strip() for s in sentences)
    return [s for s in cleaned if s]


def _ends_sentence(text: str, match: re.Match) -> bool:
    punctuation = match.group(1)
    following = text[match.end():match.end() + 1]
    if not following:
        return True
    upper_next = following.isupper() or not following.isalnum()
    if "!" in punctuation or "?" in punctuation:
        return True
    if "…" in punctuation or len(punctuation) > 1:  # an ellipsis trails off mid-sentence unless a new one starts
        return upper_next
    word = text[:match.start()].rsplit(None, 1)[-1] if text[:match.start()].strip() else ""
    word = word.lstrip("\"'“‘([").lower()
    if word in _TITLES:
        return False
    if word in _BEFORE_NUMBER:
        return not following.isdigit()
    if word in _MAY_END:
        return following.isupper()
    # A single capital before a capitalised word is an initial ("J. R. R. Tolkien"), except "I".
    return not (len(word) == 1 and word.isalpha() and word != "i" and following.isupper())


def split_long(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at whitespace where there is any."""
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit  # one unbroken word longer than the limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def chunk_by_chars(lengths: list[int], budget: int, separator: int = 1) -> list[list[int]]:
    """Group consecutive items (given by their lengths) into chunks of at most `budget` characters.

    Items keep their order; `separator` characters are counted between items of a chunk. An item
    longer than the budget gets a chunk of its own (callers split such items first).
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        needed = length if not current else used + separator + length
        if current and needed > budget:
            chunks.append(current)
            current, needed = [], length
        current.append(index)
        used = needed
    if current:
        chunks.append(current)
    return chunks


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return text[:limit]
    cut = text.rfind(" ", 0, limit)
    head = text[:cut if cut > limit // 2 else limit - 1].rstrip(" ,;:")
    return head + "…"
