"""Sources: uploaded documents (text, Markdown, HTML, PDF, DOCX) sniffed, extracted, chunked along
headings and sentences, and stored as memories that name the source, page and place they came from."""
