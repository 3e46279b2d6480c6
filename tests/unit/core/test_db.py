"""core/db.py, the part without a server: URL rewriting for the asyncpg driver, the pool's sizing, which
errors are outages to retry, which pooled connections are checked before they are handed out."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.util import greenlet_spawn

from core import db
from core.db import _server_unavailable_is_operational, async_url


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


def test_a_statement_prepared_before_a_schema_change_fails_as_an_outage_to_retry():
    stale = AsyncAdapt_asyncpg_dbapi.InvalidCachedStatementError("cached statement plan is invalid")
    context = SimpleNamespace(original_exception=stale, statement="SELECT embedding FROM memories", parameters=())
    assert isinstance(_server_unavailable_is_operational(context), OperationalError)
    other = SimpleNamespace(original_exception=ValueError("a bug"), statement="", parameters=())
    assert _server_unavailable_is_operational(other) is None


def test_a_connection_stuck_in_a_cancelled_operation_is_an_outage_and_dropped_not_a_bug():
    stuck = AsyncAdapt_asyncpg_dbapi.InternalClientError("cannot switch to state 15; another operation (2) is in "
                                                         "progress")
    context = SimpleNamespace(original_exception=stuck, statement="SELECT 1", parameters=(), is_disconnect=False)
    raised = _server_unavailable_is_operational(context)
    assert isinstance(raised, OperationalError) and raised.connection_invalidated
    assert context.is_disconnect  # the pool drops it
    other = AsyncAdapt_asyncpg_dbapi.InternalClientError("some other client-side failure")
    assert _server_unavailable_is_operational(SimpleNamespace(original_exception=other, statement="", parameters=(),
                                                              is_disconnect=False)) is None


class FakeDriver:
    """An asyncpg connection as the checkout check sees it: open or closed, and a ping that works or fails."""

    def __init__(self, *, closed: bool = False, ping_fails: bool = False) -> None:
        self.closed, self.ping_fails, self.pings = closed, ping_fails, 0

    def is_closed(self) -> bool:
        return self.closed

    async def fetchval(self, sql: str):
        self.pings += 1
        if self.ping_fails:
            raise ConnectionResetError("the peer is gone")
        return 1


def pooled(driver: FakeDriver, idle_seconds: float) -> SimpleNamespace:
    return SimpleNamespace(driver_connection=driver, info={db._CHECKED_IN: time.monotonic() - idle_seconds})


async def test_checkout_trusts_a_recently_used_open_connection_without_a_round_trip():
    recent = FakeDriver(ping_fails=True)
    await greenlet_spawn(db._on_checkout, None, pooled(recent, 1.0), None)
    assert recent.pings == 0


async def test_checkout_drops_a_connection_whose_socket_the_server_closed():
    with pytest.raises(DisconnectionError):
        await greenlet_spawn(db._on_checkout, None, pooled(FakeDriver(closed=True), 1.0), None)


async def test_checkout_pings_a_connection_idle_past_the_window_and_drops_it_if_the_ping_fails():
    idle = FakeDriver()
    await greenlet_spawn(db._on_checkout, None, pooled(idle, db.PING_AFTER_IDLE_SECONDS + 1), None)
    assert idle.pings == 1
    with pytest.raises(DisconnectionError):
        await greenlet_spawn(db._on_checkout, None, pooled(FakeDriver(ping_fails=True), db.PING_AFTER_IDLE_SECONDS + 1),
                             None)
