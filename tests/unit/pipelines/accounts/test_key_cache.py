"""pipelines/accounts/key_cache.py without a server: what is kept, for how long, and what a notification or a
lost LISTEN drops. The listener is a stand-in here; tests/integration/test_key_cache.py runs the real one."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from pipelines.accounts import key_cache as module
from pipelines.accounts.key_cache import KeyCache, KeyEntry


class Listener:
    """What KeyCache needs of core.pg_listen.PgListener: a `listening` flag and start/stop."""

    def __init__(self) -> None:
        self.listening = False
        self.started = 0

    def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.listening = False


def entry(prefix: str = "aaaaaaaaaaaa", org_id: uuid.UUID | None = None, **fields) -> KeyEntry:
    made = KeyEntry(key_id=uuid.uuid4(), org_id=org_id or uuid.uuid4(), prefix=prefix, secret_hash="h", role="member",
                    scopes=None, expires_at=None, revoked_at=None, last_used_at=None, org_live=True, rate_limit=None,
                    loaded_at=module.time.monotonic())
    return replace(made, **fields)


@pytest.fixture
def listening():
    listener = Listener()
    cache = KeyCache(listener_factory=lambda: listener)
    listener.listening = True
    cache.clear()  # as PgListener calls it when LISTEN succeeds
    return cache, listener


def test_nothing_is_kept_while_the_listener_is_not_listening():
    listener = Listener()
    cache = KeyCache(listener_factory=lambda: listener)
    cache.put(entry("p1"), cache.generation)
    assert cache.get("p1") is None and len(cache) == 0


def test_a_kept_entry_is_served_until_the_listener_stops_listening(listening):
    cache, listener = listening
    kept = entry("p1")
    cache.put(kept, cache.generation)
    assert cache.get("p1") is kept
    listener.listening = False
    assert cache.get("p1") is None  # even before the listener's reset drops it


def test_a_lookup_that_began_before_a_notification_is_not_kept(listening):
    cache, _ = listening
    began = cache.generation
    cache.invalidate("key:p1")  # the key was revoked while the lookup ran: it may have read the old row
    cache.put(entry("p1"), began)
    assert cache.get("p1") is None


def test_a_key_notification_drops_that_key_and_an_org_notification_every_key_of_the_org(listening):
    cache, _ = listening
    org, other = uuid.uuid4(), uuid.uuid4()
    for prefix, owner in (("k1", org), ("k2", org), ("k3", other), ("k4", other)):
        cache.put(entry(prefix, owner), cache.generation)
    cache.invalidate("key:k3")
    assert cache.get("k3") is None and cache.get("k4") is not None
    cache.invalidate(f"org:{org}")
    assert cache.get("k1") is None and cache.get("k2") is None and cache.get("k4") is not None
    cache.invalidate("all")
    assert len(cache) == 0


def test_an_entry_is_dropped_after_the_configured_age(listening, override_settings, monkeypatch):
    cache, _ = listening
    override_settings(api_key_cache_seconds=10)
    now = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    cache.put(entry("p1"), cache.generation)
    now[0] += 9.5
    assert cache.get("p1") is not None
    now[0] += 1
    assert cache.get("p1") is None


def test_zero_seconds_turns_the_cache_off(listening, override_settings):
    cache, listener = listening
    override_settings(api_key_cache_seconds=0)
    cache.put(entry("p1"), cache.generation)
    assert cache.get("p1") is None
    cache.start()
    assert listener.started == 0  # no LISTEN connection either


def test_the_cache_holds_a_bounded_number_of_keys_dropping_the_oldest(listening, monkeypatch):
    cache, _ = listening
    monkeypatch.setattr(module, "MAX_ENTRIES", 3)
    for i in range(5):
        cache.put(entry(f"p{i}"), cache.generation)
    assert len(cache) == 3 and cache.get("p0") is None and cache.get("p1") is None and cache.get("p4") is not None


def test_recording_use_updates_the_kept_entry_only_if_it_is_still_the_one_kept(listening):
    cache, _ = listening
    kept = entry("p1")
    cache.put(kept, cache.generation)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    cache.used(kept, at)
    assert cache.get("p1").last_used_at == at
    cache.invalidate("key:p1")
    cache.used(kept, at)  # a revoked key's use is not brought back
    assert cache.get("p1") is None
