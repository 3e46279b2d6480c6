"""Database engine and sessions, created lazily once per process and event loop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from core.settings import get_settings

_engine: AsyncEngine | None = None
_probe_engine: AsyncEngine | None = None
_sessionmaker: async_sessionmaker[AsyncSession] | None = None
_database_url: str | None = None


def set_database_url(url: str) -> None:
    """Point this process at a database (the embedded server's URL, or a test database)."""
    global _database_url
    _database_url = url


def database_url() -> str:
    """The configured PostgreSQL URL; an embedded server's when `set_database_url` was called."""
    url = _database_url or get_settings().database_url
    if not url:
        raise RuntimeError("no database URL: set AGENTMEM_DATABASE_URL or start through `agentmem up`")
    return url


def async_url(url: str) -> str:
    """Rewrite a plain postgres URL to the asyncpg driver SQLAlchemy needs."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]}")


# SQLSTATEs of a server that is shutting down, crashed or starting up ("the database system is starting
# up", as after a restart). asyncpg's errors for them reach SQLAlchemy as a bare DBAPIError.
SERVER_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03"})


def _server_unavailable_is_operational(context: ExceptionContext) -> OperationalError | None:
    """Raise a server that is stopping or starting as an OperationalError: an outage like a refused
    connection (a 503 in the API, a retry in a job), not a bug. Its pooled connections are dead.

    So is a statement prepared before a change of the schema that changed its result (a switch of the
    embedding columns' dimension, core/embedding_columns.py): it fails once in the transaction it was
    reused in, then the dialect prepares it again; a retry succeeds.

    And so is a connection still busy with an operation that was cancelled half way (a readiness probe's
    timeout while the server hung or died): asyncpg refuses it "another operation is in progress" for
    good, so it is dropped as a dead one (found by `test_faults`, now that checkout no longer pings)."""
    error = context.original_exception
    if isinstance(error, AsyncAdapt_asyncpg_dbapi.InvalidCachedStatementError):
        return OperationalError(context.statement, context.parameters, error)
    stuck = isinstance(error, AsyncAdapt_asyncpg_dbapi.InternalClientError) and "another operation" in str(error)
    if not stuck and getattr(error, "sqlstate", None) not in SERVER_UNAVAILABLE:
        return None
    context.is_disconnect = True
    return OperationalError(context.statement, context.parameters, context.original_exception,
                            connection_invalidated=True)


# A pooled connection idle longer than this is pinged before it is handed out; one used more recently is
# trusted if its socket is still open (a server that stopped or restarted closed it).
PING_AFTER_IDLE_SECONDS = 30.0
_CHECKED_IN = "agentmem_checked_in"


def _on_checkin(dbapi_connection: Any, entry: ConnectionPoolEntry) -> None:
    entry.info[_CHECKED_IN] = time.monotonic()


def _on_checkout(dbapi_connection: Any, entry: ConnectionPoolEntry, proxy: Any) -> None:
    """Hand out only a live connection, in no round trip for one used recently.

    SQLAlchemy's `pool_pre_ping` costs three round trips per checkout on asyncpg (BEGIN, a ping,
    ROLLBACK), and a request checks out two or three connections: an authenticated GET took 8.8 ms
    with it and 6.1 ms without. A connection the server closed (a restart, a crash, a terminated
    backend) is known closed to asyncpg as soon as the event loop reads the end of its socket; only
    one idle for `PING_AFTER_IDLE_SECONDS` (a firewall may have dropped it silently) is pinged, once.
    A DisconnectionError makes the pool drop the connection and check out another.
    """
    driver = entry.driver_connection
    if driver is None or driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")
    if time.monotonic() - entry.info.setdefault(_CHECKED_IN, time.monotonic()) > PING_AFTER_IDLE_SECONDS:
        try:
            await_only(driver.fetchval("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure of the ping means a dead connection
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc


def _create_engine(pool_size: int, max_overflow: int) -> AsyncEngine:
    settings = get_settings()
    # Looked up at call time: with tracing on, the SQLAlchemy instrumentation wraps it (core/tracing.py).
    engine = sqlalchemy_asyncio.create_async_engine(
        async_url(database_url()),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,  # _on_checkout instead
        # Waiting for a free connection is load, not an outage: its own (shorter) limit, whose
        # sqlalchemy.exc.TimeoutError the API answers as 503 `overloaded`.
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_command_timeout_seconds,
            "server_settings": {"application_name": "agentmem"},
        },
    )
    event.listen(engine.sync_engine, "handle_error", _server_unavailable_is_operational, retval=True)
    event.listen(engine.sync_engine, "checkout", _on_checkout)
    event.listen(engine.sync_engine, "checkin", _on_checkin)
    return engine


def get_engine() -> AsyncEngine:
    """The process's engine; short connect and command timeouts turn outages into errors, not hangs."""
    global _engine, _sessionmaker
    if _engine is None:
        settings = get_settings()
        _engine = _create_engine(settings.db_pool_size, settings.db_max_overflow)
        _sessionmaker = async_sessionmaker(_engine, expire_on_commit=False)
    return _engine


def sessionmaker() -> async_sessionmaker[AsyncSession]:
    """The session factory bound to the process's engine."""
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


@asynccontextmanager
async def session_scope() -> AsyncIterator[AsyncSession]:
    """A session for code outside a request; the caller commits."""
    async with sessionmaker()() as session:
        yield session


@asynccontextmanager
async def autocommit_scope() -> AsyncIterator[AsyncSession]:
    """A session each of whose statements commits on its own: for a write that is one statement.

    No BEGIN and no COMMIT go to the server: one round trip per statement instead of three, which is
    most of what claiming or finishing a small job costs.
    """
    async with sessionmaker()() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


async def flush_or_raise(session: AsyncSession, errors: dict[str | None, Exception]) -> None:
    """Flush in a savepoint (a unique violation leaves the transaction usable); a violation of a constraint
    named in `errors` raises its error instead, `None` standing for any other (unnamed ones re-raise)."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        for constraint, error in errors.items():
            if constraint is None or constraint in str(exc.orig):
                raise error from exc
        raise


async def ping_database() -> None:
    """`SELECT 1` on a connection of its own, kept apart from the pool requests share: a pool busy
    with requests is a busy service, not a database down (the readiness probe's check)."""
    global _probe_engine
    if _probe_engine is None:
        _probe_engine = _create_engine(pool_size=1, max_overflow=0)
    async with _probe_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def dispose_engine() -> None:
    """Close every pooled connection (lifespan shutdown, worker shutdown, tests)."""
    global _engine, _sessionmaker, _probe_engine
    for engine in (_engine, _probe_engine):
        if engine is not None:
            await engine.dispose()
    _engine, _sessionmaker, _probe_engine = None, None, None
