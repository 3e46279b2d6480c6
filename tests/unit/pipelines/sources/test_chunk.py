"""Chunks never cross a heading, end between sentences, overlap by whole sentences, and know their place."""

from __future__ import annotations

from pipelines.sources import sniff
from pipelines.sources.chunk import chunk_document
from pipelines.sources.extract import extract
from tests.support import documents

MARKDOWN = """# Kitchen

The oven takes ten minutes to heat. Always use the left rack for bread. Clean the trays on Fridays.
The fridge is defrosted monthly.

## Knives

Knives are sharpened every week. Never put them in the dishwasher.

# Garden

Water the tomatoes each morning. The hose is behind the shed.
"""


def test_no_chunk_crosses_a_heading():
    document = extract(MARKDOWN.encode(), sniff.MARKDOWN)
    chunks = chunk_document(document, size=80, overlap=0)
    by_section = {}
    for chunk in chunks:
        by_section.setdefault(chunk.headings, []).append(chunk.body)
    assert list(by_section) == [("Kitchen",), ("Kitchen", "Knives"), ("Garden",)]
    assert all("Knives" not in body and "tomatoes" not in body for body in by_section[("Kitchen",)])
    assert " ".join(by_section[("Kitchen", "Knives")]) == ("Knives are sharpened every week. "
                                                           "Never put them in the dishwasher.")


def test_chunks_end_between_sentences_within_the_size():
    document = extract(MARKDOWN.encode(), sniff.MARKDOWN)
    chunks = chunk_document(document, size=80, overlap=0)
    assert all(len(c.body) <= 80 for c in chunks)
    assert all(c.body.endswith(".") for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_overlap_repeats_whole_sentences_of_the_chunk_before():
    text = " ".join(f"Sentence number {n} is here." for n in range(12))
    document = extract(text.encode(), sniff.TEXT)
    plain = chunk_document(document, size=100, overlap=0)
    overlapped = chunk_document(document, size=100, overlap=40)
    assert len(overlapped) > len(plain)
    for before, after in zip(overlapped, overlapped[1:], strict=False):
        last_sentence = before.body.rsplit(". ", 1)[-1]
        assert after.body.startswith(last_sentence.rstrip(".")), (before.body, after.body)


def test_offsets_locate_each_chunk_in_the_extracted_text():
    document = extract(MARKDOWN.encode(), sniff.MARKDOWN)
    for chunk in chunk_document(document, size=80, overlap=30):
        located = document.text[chunk.start:chunk.end]
        assert located.startswith(chunk.body.split()[0]) and located.endswith(chunk.body.split()[-1])


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces():
    document = extract((" ".join(["word"] * 100) + ".").encode(), sniff.TEXT)
    chunks = chunk_document(document, size=120, overlap=0)
    assert len(chunks) == 5 and all(len(c.body) <= 120 for c in chunks)


def test_the_stored_text_starts_with_the_heading_path():
    document = extract(MARKDOWN.encode(), sniff.MARKDOWN)
    knives = next(c for c in chunk_document(document, size=500, overlap=0) if c.headings == ("Kitchen", "Knives"))
    assert knives.content.startswith("Kitchen › Knives\n\nKnives are sharpened")


def test_pdf_chunks_name_their_pages():
    data = documents.pdf(["Alpha page text. " * 5, "Beta page text. " * 5])
    chunks = chunk_document(extract(data, sniff.PDF), size=2000, overlap=0)
    assert [(c.page, c.page_end) for c in chunks] == [(1, 2)]
    small = chunk_document(extract(data, sniff.PDF), size=90, overlap=0)
    assert {c.page for c in small} == {1, 2} and all(c.page <= c.page_end for c in small)
