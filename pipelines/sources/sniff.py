"""What an upload is, told from its bytes: the client's Content-Type and file name are never trusted for
binary formats (a file name only tells Markdown from plain text, which the bytes can't).

PDF starts with `%PDF-` (within its first KiB, as readers allow); DOCX is a ZIP holding
`word/document.xml`; anything else must be text (UTF-8, or UTF-16 with a byte-order mark) without
control characters, and is HTML when it opens with markup, Markdown when its name or its lines say
so, else plain text. Other bytes (images, archives, executables) are refused.
"""

from __future__ import annotations

import io
import re
import zipfile

from core.errors import AppError

PDF, DOCX, HTML, MARKDOWN, TEXT = ("application/pdf",
                                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                                   "text/html", "text/markdown", "text/plain")
ACCEPTED = (TEXT, MARKDOWN, HTML, PDF, DOCX)
MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")

_HTML_START = re.compile(rb"^\s*(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]|<!--)", re.IGNORECASE)
_HTML_TAGS = re.compile(r"</?(?:html|head|body|div|p|h[1-6]|span|a|ul|ol|li|table|section|article|br|title)"
                        r"(?:\s[^>]*)?/?>", re.IGNORECASE)
_MARKDOWN_LINE = re.compile(r"^(?:#{1,6}\s+\S|```|~~~|\s*[-*+]\s+\S|\s*\d{1,3}\.\s+\S|>\s)", re.MULTILINE)
_MARKDOWN_INLINE = re.compile(r"\[[^\]\n]+\]\([^)\s]+\)|\*\*[^*\n]+\*\*|`[^`\n]+`")
# Control characters text never holds (tab, line feed, form feed and carriage return are fine).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class UnsupportedMediaType(AppError):
    status_code, code = 415, "unsupported_media_type"


def _refuse(why: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"{why}; upload plain text, Markdown, HTML, PDF or DOCX",
                                details={"accepted": list(ACCEPTED)})


def decode_text(data: bytes) -> str | None:
    """The bytes as text (UTF-8, or UTF-16 with a byte-order mark), or None if they aren't text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
    sample = text[:65_536]
    if _CONTROL.search(sample):
        return None
    return text


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False


def looks_like_html(text: str, filename: str) -> bool:
    """Markup at the start, or an HTML file name and tags in it."""
    head = text[:4096].lstrip().encode()
    if _HTML_START.match(head):
        return True
    tags = len(_HTML_TAGS.findall(text[:65_536]))
    return tags >= 1 and (filename.lower().endswith(HTML_SUFFIXES) or (head.startswith(b"<") and tags >= 2))


def looks_like_markdown(text: str, filename: str) -> bool:
    """A Markdown file name, or headings, fences, lists and links in the text."""
    if filename.lower().endswith(MARKDOWN_SUFFIXES):
        return True
    sample = text[:65_536]
    headings = len(re.findall(r"^#{1,6}\s+\S", sample, re.MULTILINE))
    return headings >= 1 and len(_MARKDOWN_LINE.findall(sample)) + len(_MARKDOWN_INLINE.findall(sample)) >= 2


def sniff(data: bytes, filename: str = "") -> str:
    """The media type of an upload, one of ACCEPTED; UnsupportedMediaType (415) for anything else."""
    if not data:
        raise _refuse("the file is empty")
    if b"%PDF-" in data[:1024]:
        return PDF
    if data.startswith(b"PK\x03\x04"):
        if _is_docx(data):
            return DOCX
        raise _refuse("a ZIP archive that is not a Word document (no word/document.xml)")
    text = decode_text(data)
    if text is None:
        raise _refuse("the file is neither text (UTF-8 or UTF-16) nor a PDF or Word document")
    if looks_like_html(text, filename):
        return HTML
    if looks_like_markdown(text, filename):
        return MARKDOWN
    return TEXT
