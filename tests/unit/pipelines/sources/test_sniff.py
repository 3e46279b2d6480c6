"""What an upload is, from its bytes alone."""

from __future__ import annotations

import io
import zipfile

import pytest

from pipelines.sources.sniff import DOCX, HTML, MARKDOWN, PDF, TEXT, UnsupportedMediaType, sniff
from tests.support import documents


def test_a_pdf_is_a_pdf_whatever_its_name():
    assert sniff(documents.pdf(["Hello."]), "notes.txt") == PDF


def test_a_word_document_is_docx_whatever_its_name():
    assert sniff(documents.docx([("p", "Hello.")]), "report.pdf") == DOCX


def test_html_is_told_by_its_markup():
    assert sniff(b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", "page.txt") == HTML
    assert sniff(b"  <html lang='en'><p>Hi</p></html>") == HTML
    assert sniff(b"<p>One</p><p>Two</p>", "fragment.html") == HTML


def test_markdown_by_name_or_by_its_headings_and_lists():
    assert sniff(b"Just a line.", "readme.md") == MARKDOWN
    assert sniff(b"# Title\n\nSome text with a [link](http://x.y).\n\n- item\n") == MARKDOWN


def test_prose_with_a_hash_or_a_less_than_sign_is_plain_text():
    assert sniff(b"The score was 3 < 4, and #1 on the list.\nNothing else.", "notes") == TEXT
    assert sniff("Grüße aus Köln. Ein Satz.".encode(), "") == TEXT


def test_utf16_with_a_byte_order_mark_is_text():
    assert sniff("Hello there.".encode("utf-16"), "x.txt") == TEXT


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",                 # an image
    b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),        # an executable
    b"\xff\xd8\xff\xe0" + b"\x00" * 64,                    # a JPEG
    b"valid text with a NUL \x00 inside",         # text no column can hold
    b"\xc3\x28 invalid utf-8",                              # not UTF-8
], ids=["png", "elf", "jpeg", "nul", "bad-utf8"])
def test_binary_junk_is_415_naming_the_accepted_types(data):
    with pytest.raises(UnsupportedMediaType) as refused:
        sniff(data, "file.txt")
    assert refused.value.status_code == 415 and refused.value.code == "unsupported_media_type"
    assert set(refused.value.details["accepted"]) == {TEXT, MARKDOWN, HTML, PDF, DOCX}


def test_a_zip_that_is_not_a_word_document_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("data.csv", "a,b\n1,2\n")
    with pytest.raises(UnsupportedMediaType, match="not a Word document"):
        sniff(out.getvalue(), "data.docx")


def test_an_empty_file_is_refused():
    with pytest.raises(UnsupportedMediaType, match="empty"):
        sniff(b"", "empty.txt")
