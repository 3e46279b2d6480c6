"""Core-memory blocks: versioned writes and the rewrite job that shortens a block past its threshold."""
