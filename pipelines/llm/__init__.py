"""LLM provider configurations of organizations, and which provider a job uses."""
