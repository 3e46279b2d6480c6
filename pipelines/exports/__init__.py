"""Export a scope to a compressed archive, import one, and the archives' storage (kinds.py lists what moves)."""
