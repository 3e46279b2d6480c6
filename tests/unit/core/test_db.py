"""core/db.py, the part without a server: URL rewriting for the asyncpg driver, the pool's sizing."""

from __future__ import annotations

import pytest

from core import db
from core.db import async_url


@pytest.mark.parametrize("url", ["postgresql://u:p@h:5432/db", "postgres://u:p@h:5432/db",
                                 "postgresql+asyncpg://u:p@h:5432/db"])
def test_async_url_points_any_postgres_url_at_asyncpg(url):
    assert async_url(url) == "postgresql+asyncpg://u:p@h:5432/db"


def test_async_url_rejects_other_databases_without_echoing_the_password():
    with pytest.raises(ValueError) as exc:
        async_url("mysql://admin:s3cret@db.example:3306/app")
    assert "s3cret" not in str(exc.value)
    assert "db.example:3306/app" in str(exc.value)


async def test_the_pool_is_sized_from_settings_and_waits_for_a_connection_by_its_own_timeout(monkeypatch,
                                                                                                 override_settings):
    override_settings(db_pool_size=3, db_max_overflow=4, db_pool_timeout_seconds=0.5, db_connect_timeout_seconds=7.0)
    monkeypatch.setattr(db, "_engine", None)
    monkeypatch.setattr(db, "_sessionmaker", None)
    monkeypatch.setattr(db, "_database_url", "postgresql://u@127.0.0.1:9/none")  # never connected to
    engine = db.get_engine()
    try:
        assert (engine.pool.size(), engine.pool._max_overflow, engine.pool._timeout) == (3, 4, 0.5)
    finally:
        await engine.dispose()
