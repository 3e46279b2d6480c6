"""/readyz: a dependency that hangs past the check's time limit is "not ready", never a 500."""

from __future__ import annotations

import json

from api.routes import health


class _Redis:
    async def zcount(self, *args):
        raise TimeoutError


async def _hangs() -> None:
    raise TimeoutError  # what asyncio.timeout raises when the ping outlives it


async def test_a_database_and_redis_that_time_out_make_readyz_a_503(monkeypatch):
    monkeypatch.setattr(health, "ping_database", _hangs)
    monkeypatch.setattr(health, "get_redis", lambda: _Redis())
    response = await health.readyz()
    assert response.status_code == 503
    checks = json.loads(response.body)["checks"]
    assert checks["database"] == {"ok": False, "error": "TimeoutError"}
    assert checks["redis"] == {"ok": False, "error": "TimeoutError"}
