"""Memories: the store and its history, batch ingest, fact extraction, duplicate detection, and search
(vector, BM25, fused)."""
