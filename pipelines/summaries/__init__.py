"""Summaries of conversations: extractive (offline) and abstractive (an LLM), map-reduced over long runs."""
