"""Maintenance tasks: jobs of kind `maintenance` that keep an organization's data healthy (registry.py)."""
