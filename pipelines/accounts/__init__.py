"""Accounts and access: users, organizations and members, API keys, sign-in, rate limits and quotas, the audit log."""
