"""API keys an API process has looked up recently, so a request with a known key needs no database query.

A revoked key must stop working on the next request, so the cache hears of every change first:
triggers on `api_keys` (revocation, expiry, role, scopes) and `organizations` (limits, deletion) send
`NOTIFY agentmem_auth` when their transaction commits (migration 0016), whatever wrote the row: the
API, the CLI, maintenance or SQL by hand. Each API process LISTENs on a connection of its own
(core/pg_listen.py) and drops what a notification names. Nothing is cached while it is not listening
(starting, connection lost, a pooler that does not pass LISTEN): every request then looks its key up.
A lookup that began before a notification is not stored, and no entry outlives
`api_key_cache_seconds`, whatever else happens.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from core.db import database_url
from core.metrics import API_KEY_CACHE_LISTENING
from core.pg_listen import PgListener, plain_dsn
from core.settings import get_settings
from schemas.tables import ApiKey, Organization

CHANNEL = "agentmem_auth"
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class KeyEntry:
    """What authenticating a key needs from its row and its organization (None: deleted)."""

    key_id: uuid.UUID
    org_id: uuid.UUID
    prefix: str
    secret_hash: str
    role: str
    scopes: tuple[str, ...] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    org_live: bool
    rate_limit: int | None
    loaded_at: float

    @classmethod
    def of(cls, key: ApiKey, org: Organization | None) -> KeyEntry:
        return cls(key_id=key.id, org_id=key.org_id, prefix=key.prefix, secret_hash=key.secret_hash, role=key.role,
                   scopes=tuple(key.scopes) if key.scopes is not None else None, expires_at=key.expires_at,
                   revoked_at=key.revoked_at, last_used_at=key.last_used_at, org_live=org is not None,
                   rate_limit=(org.limits or {}).get("rate_limit_per_minute") if org is not None else None,
                   loaded_at=time.monotonic())


class KeyCache:
    """Entries by key prefix, valid while the listener listens (see the module's docstring)."""

    def __init__(self, listener_factory=None) -> None:
        self._entries: dict[str, KeyEntry] = {}
        self.generation = 0  # bumped by every notification and every change of `listening`
        factory = listener_factory or (lambda: PgListener(lambda: plain_dsn(database_url()), CHANNEL,
                                                          self.invalidate, self.clear))
        self._listener: PgListener = factory()

    @property
    def active(self) -> bool:
        return get_settings().api_key_cache_seconds > 0 and self._listener.listening

    def start(self) -> None:
        if get_settings().api_key_cache_seconds > 0:
            self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
        self.clear()

    def get(self, prefix: str) -> KeyEntry | None:
        entry = self._entries.get(prefix)
        if entry is None:
            return None
        if not self.active or time.monotonic() - entry.loaded_at > get_settings().api_key_cache_seconds:
            self._entries.pop(prefix, None)
            return None
        return entry

    def put(self, entry: KeyEntry, generation: int) -> None:
        """Keep `entry`, looked up when the generation was `generation`, unless something changed since."""
        if generation != self.generation or not self.active:
            return
        if len(self._entries) >= MAX_ENTRIES and entry.prefix not in self._entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest
        self._entries[entry.prefix] = entry

    def used(self, entry: KeyEntry, at: datetime) -> None:
        """The key's `last_used_at` was written: the entry need not write it again for a minute."""
        if self._entries.get(entry.prefix) is entry:
            self._entries[entry.prefix] = replace(entry, last_used_at=at)

    def invalidate(self, payload: str) -> None:
        """A notification: `key:<prefix>` or `org:<id>`; anything else drops every entry."""
        self.generation += 1
        kind, _, value = payload.partition(":")
        if kind == "key":
            self._entries.pop(value, None)
        elif kind == "org":
            for prefix in [p for p, e in self._entries.items() if str(e.org_id) == value]:
                self._entries.pop(prefix, None)
        else:
            self._entries.clear()

    def clear(self) -> None:
        """Drop everything (the listener connected or lost its connection)."""
        self.generation += 1
        self._entries.clear()
        API_KEY_CACHE_LISTENING.set(1 if self._listener.listening else 0)

    def __len__(self) -> int:
        return len(self._entries)


_cache: KeyCache | None = None


def key_cache() -> KeyCache:
    """This process's cache (created on first use; the API starts its listener in its lifespan)."""
    global _cache
    if _cache is None:
        _cache = KeyCache()
    return _cache


async def close_key_cache() -> None:
    global _cache
    if _cache is not None:
        await _cache.stop()
        _cache = None
