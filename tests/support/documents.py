"""Small documents of every accepted type, made in the tests: PDF (fpdf2), DOCX (python-docx), HTML, Markdown."""

from __future__ import annotations

import io


def pdf(pages: list[str]) -> bytes:
    """A PDF with one page per text (Helvetica, latin-1 text)."""
    from fpdf import FPDF

    document = FPDF()
    document.set_font("Helvetica", size=11)
    for text in pages:
        document.add_page()
        for paragraph in text.split("\n\n"):
            document.multi_cell(0, 6, paragraph)
            document.ln(6)
    return bytes(document.output())


def docx(parts: list[tuple[str, str]]) -> bytes:
    """A Word document of (style, text) parts: `title`, `h1`…`h3`, or `p` for a paragraph."""
    import docx as python_docx

    document = python_docx.Document()
    for style, text in parts:
        if style == "title":
            document.add_heading(text, level=0)
        elif style.startswith("h"):
            document.add_heading(text, level=int(style[1:]))
        else:
            document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def corrupt_pdf() -> bytes:
    """Bytes that start like a PDF and are nothing of the kind after."""
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nstream\x00\xff garbage" * 3
