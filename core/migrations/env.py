"""Alembic environment: runs migrations over the async engine, serialised by an advisory lock."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.db import async_url, database_url

MIGRATION_LOCK = 7_310_001


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(async_url(database_url()))
    async with engine.connect() as conn:
        # Several processes may start at once (compose, Procfile): one migrates, the rest wait.
        await conn.execute(text(f"SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        await conn.commit()
        try:
            await conn.run_sync(_run)
            await conn.commit()
        finally:
            await conn.execute(text(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            await conn.commit()
    await engine.dispose()


asyncio.run(_main())
