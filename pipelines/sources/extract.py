"""Text out of a document, as blocks (paragraphs and headings) that know their page and heading path.

Each format keeps what places a passage: PDF pages (pypdf), Word heading styles (python-docx), HTML
`<h1>`…`<h6>` (the standard library's parser; scripts, styles and other non-content elements
dropped), Markdown `#` and underlined headings (not inside code fences). A file the reader can't
open fails the job with `source_unreadable` before anything is stored.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from core.errors import PermanentJobError
from pipelines.sources import sniff

log = logging.getLogger(__name__)
_SPACES = re.compile(r"\s+")
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


class SourceUnreadable(PermanentJobError):
    code = "source_unreadable"


class SourceEmpty(PermanentJobError):
    code = "source_empty"


@dataclass(frozen=True)
class Block:
    """A paragraph (or a heading, `level` > 0) of the document, under its headings, on its page (PDF only)."""

    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None
    level: int = 0
    start: int = 0  # where the block begins in `Document.text`


@dataclass
class Document:
    """A document's blocks in order; `text` is them joined by blank lines (offsets in chunks point into it)."""

    media_type: str
    blocks: list[Block] = field(default_factory=list)
    pages: int | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


class _Builder:
    """Collects blocks, keeping the heading path and each block's offset."""

    def __init__(self, media_type: str, pages: int | None = None) -> None:
        self.document = Document(media_type, pages=pages)
        self.path: list[tuple[int, str]] = []
        self._offset = 0

    def _add(self, text: str, *, page: int | None, level: int) -> None:
        self.document.blocks.append(Block(text, tuple(t for _, t in self.path), page, level, self._offset))
        self._offset += len(text) + 2

    def paragraph(self, text: str, page: int | None = None) -> None:
        text = _SPACES.sub(" ", text).strip()
        if text:
            self._add(text, page=page, level=0)

    def heading(self, text: str, level: int, page: int | None = None) -> None:
        text = _SPACES.sub(" ", text).strip()
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        self._add(text, page=page, level=level)


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def extract_text(data: str, media_type: str = sniff.TEXT) -> Document:
    """Plain text: paragraphs at blank lines, no headings."""
    builder = _Builder(media_type)
    for paragraph in _paragraphs(data):
        builder.paragraph(paragraph)
    return builder.document


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def extract_markdown(data: str) -> Document:
    """Markdown: `#` headings (and underlined ones) start sections; code fences are kept as text."""
    builder = _Builder(sniff.MARKDOWN)
    lines: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if lines:
            builder.paragraph("\n".join(lines))
            lines.clear()

    for line in data.splitlines():
        opened = _FENCE.match(line)
        if fence is not None:
            lines.append(line)
            if opened and opened.group(1) == fence:
                fence = None
                flush()
            continue
        if opened:
            flush()
            fence = opened.group(1)
            lines.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            builder.heading(atx.group(2) or "", len(atx.group(1)))
        elif _SETEXT.match(line) and len(lines) == 1 and lines[0].strip():
            builder.heading(lines.pop(), 1 if line.strip().startswith("=") else 2)
        elif not line.strip():
            flush()
        else:
            lines.append(line)
    flush()
    return builder.document


_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas"})
_BLOCKS = frozenset({"p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "li", "ul", "ol",
                     "table", "tr", "td", "th", "blockquote", "pre", "br", "hr", "dl", "dt", "dd", "figure",
                     "figcaption", "form", "body", "html"})
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"})


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = _Builder(sniff.HTML)
        self.skipping: list[str] = []
        self.heading_level = 0
        self.buffer: list[str] = []

    def _flush(self) -> None:
        text = "".join(self.buffer)
        self.buffer.clear()
        if self.heading_level:
            self.builder.heading(text, self.heading_level)
        else:
            self.builder.paragraph(text)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "body":  # `</head>` may be left out: the body starts anyway
            self.skipping.clear()
        if tag in _SKIPPED:
            if tag not in _VOID:
                self.skipping.append(tag)
            return
        if self.skipping:
            return
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._flush()
            self.heading_level = int(tag[1])
        elif tag in _BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._flush()
            self.heading_level = 0
        elif tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.buffer.append(data)


def extract_html(data: str) -> Document:
    """HTML: text of the body, a block per paragraph-like element, `<h1>`…`<h6>` as headings."""
    parser = _HTMLText()
    parser.feed(data)
    parser.close()
    parser._flush()
    return parser.builder.document


def extract_pdf(data: bytes) -> Document:
    """PDF: each page's text (pypdf), paragraphs at blank lines, every block with its page number."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SourceUnreadable("the PDF is encrypted with a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except SourceUnreadable:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; all mean the same here
        raise SourceUnreadable(f"the PDF can't be read: {type(exc).__name__}: {str(exc)[:300]}") from exc
    builder = _Builder(sniff.PDF, pages=len(pages))
    for number, text in enumerate(pages, start=1):
        for paragraph in _paragraphs(_HYPHEN_BREAK.sub(r"\1\2", text)):
            builder.paragraph(paragraph, page=number)
    return builder.document


_HEADING_STYLE = re.compile(r"^Heading (\d)$")


def extract_docx(data: bytes) -> Document:
    """DOCX: paragraphs in order, Title and `Heading N` styles as headings, a table row as a block."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        items = list(document.iter_inner_content())
    except Exception as exc:  # a damaged archive or XML: python-docx and lxml raise many types
        raise SourceUnreadable(f"the Word document can't be read: {type(exc).__name__}: {str(exc)[:300]}") from exc
    builder = _Builder(sniff.DOCX)
    for item in items:
        if isinstance(item, Table):
            for row in item.rows:
                cells = list(dict.fromkeys(c.text.strip() for c in row.cells if c.text.strip()))
                builder.paragraph(" | ".join(cells))
            continue
        style = item.style.name if item.style is not None else ""
        heading = _HEADING_STYLE.match(style or "")
        if style == "Title":  # above every Heading N
            builder.heading(item.text, 1)
        elif heading:
            builder.heading(item.text, int(heading.group(1)) + 1)
        else:
            builder.paragraph(item.text)
    return builder.document


def extract(data: bytes, media_type: str) -> Document:
    """The document's blocks; SourceUnreadable if its reader fails, SourceEmpty if it holds no text."""
    if media_type == sniff.PDF:
        document = extract_pdf(data)
    elif media_type == sniff.DOCX:
        document = extract_docx(data)
    else:
        text = sniff.decode_text(data)
        if text is None:
            raise SourceUnreadable("the file is no longer readable as text")
        document = (extract_html(text) if media_type == sniff.HTML else extract_markdown(text)
                    if media_type == sniff.MARKDOWN else extract_text(text))
    if not any(b.level == 0 for b in document.blocks):
        raise SourceEmpty("the document holds no text to remember (a scanned PDF without a text layer, or an "
                          "empty file?)")
    return document
