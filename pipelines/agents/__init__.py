"""Agents and their compiled system prompts."""
