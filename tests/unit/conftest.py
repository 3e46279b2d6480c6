"""Unit-test fixtures: settings overrides and an in-process fake Redis. Nothing here opens a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest

from core import events
from core.settings import Settings, get_settings


@pytest.fixture
def override_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Change fields of the cached process settings for one test; monkeypatch restores them."""

    def override(**values: Any) -> Settings:
        settings = get_settings()
        for name, value in values.items():
            assert name in Settings.model_fields, f"Settings has no field {name!r}"
            monkeypatch.setattr(settings, name, value)
        return settings

    return override


@pytest.fixture
async def fake_redis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[fakeredis.aioredis.FakeRedis]:
    """A private fake Redis server wired in as both of core.events' clients."""
    client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    monkeypatch.setattr(events, "get_redis", lambda: client)
    monkeypatch.setattr(events, "get_stream_redis", lambda: client)
    yield client
    await client.aclose()
