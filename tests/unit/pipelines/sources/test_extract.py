"""Text out of each type, with pages and heading paths; unreadable and empty documents fail clearly."""

from __future__ import annotations

import pytest

from pipelines.sources import sniff
from pipelines.sources.extract import SourceEmpty, SourceUnreadable, extract
from tests.support import documents


def paragraphs(document):
    return [(b.text, b.headings, b.page) for b in document.blocks if b.level == 0]


def test_pdf_blocks_carry_their_page_numbers():
    data = documents.pdf(["The lighthouse keeper logs the weather at dawn.",
                          "Supplies arrive by boat every second Tuesday."])
    document = extract(data, sniff.PDF)
    assert document.pages == 2
    found = paragraphs(document)
    assert any("lighthouse keeper" in text and page == 1 for text, _, page in found)
    assert any("second Tuesday" in text and page == 2 for text, _, page in found)


def test_a_corrupt_pdf_is_unreadable():
    with pytest.raises(SourceUnreadable) as failed:
        extract(documents.corrupt_pdf(), sniff.PDF)
    assert failed.value.code == "source_unreadable"


def test_a_pdf_without_text_is_empty():
    with pytest.raises(SourceEmpty) as failed:
        extract(documents.pdf([""]), sniff.PDF)
    assert failed.value.code == "source_empty"


def test_docx_heading_styles_make_the_heading_path():
    data = documents.docx([("title", "Handbook"), ("h1", "Billing"), ("p", "Invoices go out monthly."),
                           ("h2", "Refunds"), ("p", "Refunds take five days."), ("h1", "Travel"),
                           ("p", "Book trains, not planes.")])
    assert paragraphs(extract(data, sniff.DOCX)) == [
        ("Invoices go out monthly.", ("Handbook", "Billing"), None),
        ("Refunds take five days.", ("Handbook", "Billing", "Refunds"), None),
        ("Book trains, not planes.", ("Handbook", "Travel"), None)]


def test_a_damaged_docx_is_unreadable():
    data = documents.docx([("p", "Fine.")])
    with pytest.raises(SourceUnreadable):
        extract(data[: len(data) // 2], sniff.DOCX)


def test_html_drops_scripts_and_styles_and_keeps_headings():
    html = ("<html><head><title>T</title><style>p {color: red}</style></head><body>"
            "<script>var secret = 'do not index';</script><h1>Garden</h1><p>Water the tomatoes &amp; beans.</p>"
            "<h2>Pests</h2><div>Slugs come out <b>after rain</b>.</div><noscript>enable js</noscript></body></html>")
    document = extract(html.encode(), sniff.HTML)
    assert paragraphs(document) == [("Water the tomatoes & beans.", ("Garden",), None),
                                    ("Slugs come out after rain.", ("Garden", "Pests"), None)]
    assert "secret" not in document.text and "color" not in document.text and "enable js" not in document.text


def test_markdown_headings_nest_and_fenced_hashes_are_not_headings():
    md = ("# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n```\n# a comment, not a heading\n```\n\n"
          "Usage\n-----\n\nCall it.\n\n# Appendix\n\nThe end.\n")
    found = paragraphs(extract(md.encode(), sniff.MARKDOWN))
    assert [(text.split()[0], path) for text, path, _ in found] == [
        ("Intro.", ("Guide",)), ("Run", ("Guide", "Install")), ("```", ("Guide", "Install")),
        ("Call", ("Guide", "Usage")), ("The", ("Appendix",))]


def test_block_offsets_point_into_the_documents_text():
    document = extract(b"First paragraph here.\n\n\nSecond   paragraph\nwraps.", sniff.TEXT)
    for block in document.blocks:
        assert document.text[block.start:block.start + len(block.text)] == block.text
    assert [b.text for b in document.blocks] == ["First paragraph here.", "Second paragraph wraps."]


def test_whitespace_only_text_is_empty():
    with pytest.raises(SourceEmpty):
        extract(b"   \n\n \t \n", sniff.TEXT)
